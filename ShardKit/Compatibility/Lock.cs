#if !NET9_0_OR_GREATER
namespace System.Threading;

/// <summary>
/// Stands in for .NET 9's <c>System.Threading.Lock</c> on .NET 8: the compiler lowers <c>lock</c> on a value of this
/// type to <see cref="EnterScope"/>, which here is a plain monitor on a private object.
/// </summary>
internal sealed class Lock
{
    private readonly object _monitor = new();

    public Scope EnterScope()
    {
        Monitor.Enter(_monitor);
        return new Scope(_monitor);
    }

    public readonly ref struct Scope(object monitor)
    {
        public void Dispose() => Monitor.Exit(monitor);
    }
}
#endif

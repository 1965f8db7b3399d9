using System.Diagnostics.CodeAnalysis;

// RS0026 guards against an overload with optional parameters being added later, since an old call may then bind to
// the new one. These types copy Dapper's overload sets on purpose (Query<T>, non-generic Query, multi-mapping
// Query<TFirst, TSecond, TReturn>, each with optional arguments), so calls written for Dapper compile unchanged.
[assembly: SuppressMessage("ApiDesign", "RS0026", Scope = "type", Target = "~T:ShardKit.ShardCommandTarget",
    Justification = "Dapper's overload set, on purpose")]
[assembly: SuppressMessage("ApiDesign", "RS0026", Scope = "type", Target = "~T:ShardKit.FanOutScope",
    Justification = "Dapper's overload set, on purpose")]
[assembly: SuppressMessage("ApiDesign", "RS0026", Scope = "type", Target = "~T:ShardKit.ShardGridReader",
    Justification = "Dapper's GridReader overload set, on purpose")]

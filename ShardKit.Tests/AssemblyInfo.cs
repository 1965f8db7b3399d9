// Fixtures run side by side; each test isolates itself with its own tables.
[assembly: Parallelizable(ParallelScope.Fixtures)]
[assembly: LevelOfParallelism(4)]

return await ShardKit.Tool.ShardKitTool.RunAsync(args, Console.Out, Console.Error);

import ArgumentParser
import DaptCore

struct ConfigCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "config",
        abstract: "Work with dapt configuration files.",
        subcommands: [Validate.self]
    )

    struct Validate: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Check a YAML config (--config), with any --set applied; name the first bad field.",
            discussion: "Here --set keys name their section: --set pretrain.optimizer.lr=1e-3.")

        @OptionGroup var options: ConfigOptions

        func run() throws {
            guard let file = options.config else { throw ValidationError("--config (the file to check) is required") }
            _ = try DaptConfig.load(options, section: nil)
            Console.out("\(file): ok")
        }
    }
}

import ArgumentParser
import DaptCore

struct ConfigCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "config",
        abstract: "Work with dapt configuration files.",
        subcommands: [Validate.self]
    )

    struct Validate: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Check a YAML config; name the first bad field.")

        @Argument(help: "The YAML file.")
        var file: String

        func run() throws {
            do {
                _ = try DaptConfig.load(file)
                print("\(file): ok")
            } catch let error as ConfigError {
                Console.error(error.description)
                throw ExitCode(2)
            } catch let error as FileError {
                Console.error(error.description)
                throw ExitCode(2)
            }
        }
    }
}

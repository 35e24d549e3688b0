// Package settings reads the settings of Baton's binaries, the broker and
// the worker. Every setting is an environment variable and a flag of the
// same meaning (DESIGN §4): DATABASE_URL is also --database-url, and so on;
// a flag wins over the environment, the environment over the default.
//
// A Binder binds each setting to its variable and flag and parses them;
// what goes wrong is an *Error that names the setting, which the binaries
// print as one line before exiting with code 2. The validators (DatabaseURL,
// Addr, LogFormat) check the settings both binaries share and return plain
// problems ("required, e.g. ..."), which the caller turns into an *Error
// naming its setting.
//
// NewLogger builds the logger BATON_LOG_FORMAT names: every line carries
// the stream and, while the process holds it, the epoch (Epoch); durations
// are Go durations in both formats. RouteGRPCLog sends grpc-go's own
// logging through it.
//
// The package lives in a module of its own, outside proto (the lease
// contract other languages implement), because it depends on pgx and
// grpc-go's logging.
package settings

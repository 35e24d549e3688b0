package settings

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"
)

// Error is a configuration error: it names the setting (its environment
// variable, or "flags" for a problem with the command line itself) and
// says what is wrong with it.
type Error struct {
	Setting string
	Problem string
}

func (e *Error) Error() string { return e.Setting + ": " + e.Problem }

// IsError reports whether err is (or wraps) an *Error, or is the flag
// package's help request: both end the process with exit code 2.
func IsError(err error) bool {
	var e *Error
	return errors.As(err, &e) || errors.Is(err, flag.ErrHelp)
}

// FlagName is the flag of the environment variable env: lower case, with
// '-' for '_' (BATON_LEASE_TTL is --baton-lease-ttl).
func FlagName(env string) string {
	return strings.ToLower(strings.ReplaceAll(env, "_", "-"))
}

// Binder binds settings to their environment variables and flags. Bind
// every setting, each pointer holding its default, then call Parse once.
// A Binder is not safe for concurrent use.
type Binder struct {
	fs     *flag.FlagSet
	getenv func(string) string
	// envErr is the first environment variable whose value did not parse.
	envErr *Error
	// flagErr is the first flag value that did not parse: the flag package
	// flattens a setter's error to text, so it is kept here.
	flagErr *Error
}

// NewBinder returns a Binder for the command name, reading the environment
// through getenv.
func NewBinder(name string, getenv func(string) string) *Binder {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	// Errors are reported once, by the caller, as one line naming the
	// setting; only -help prints the usage.
	fs.SetOutput(io.Discard)
	return &Binder{fs: fs, getenv: getenv}
}

// String binds *p to the environment variable env and its flag, plus the
// alias flags: a non-empty env replaces the default in *p, a flag replaces
// both.
func (b *Binder) String(p *string, env, usage string, aliases ...string) {
	if v := b.getenv(env); v != "" {
		*p = v
	}
	u := fmt.Sprintf("%s (env %s)", usage, env)
	b.fs.StringVar(p, FlagName(env), *p, u)
	for _, a := range aliases {
		b.fs.StringVar(p, a, *p, "same as -"+FlagName(env))
	}
}

// Duration binds *p like String binds a string. A value that is not a Go
// duration is an *Error naming env, whether it came from the environment
// or a flag; example shows valid values in that error (e.g. "10s, 500ms").
func (b *Binder) Duration(p *time.Duration, env, usage, example string, aliases ...string) {
	parse := func(s string) *Error {
		v, err := time.ParseDuration(s)
		if err != nil {
			return &Error{Setting: env, Problem: fmt.Sprintf("%q is not a duration (e.g. %s)", s, example)}
		}
		*p = v
		return nil
	}
	if raw := b.getenv(env); raw != "" {
		if e := parse(raw); e != nil && b.envErr == nil {
			b.envErr = e
		}
	}
	set := func(s string) error {
		e := parse(s)
		if e == nil {
			return nil
		}
		if b.flagErr == nil {
			b.flagErr = e
		}
		return e
	}
	b.fs.Func(FlagName(env), fmt.Sprintf("%s (env %s, default %s)", usage, env, *p), set)
	for _, a := range aliases {
		b.fs.Func(a, "same as -"+FlagName(env), set)
	}
}

// Bool binds a flag that has no environment variable (a switch of a
// subcommand, such as `broker status -json`).
func (b *Binder) Bool(p *bool, flagName, usage string) {
	b.fs.BoolVar(p, flagName, *p, usage)
}

// Parse reads the flags in args (without the program name) over what the
// environment set. It returns the first environment variable that did not
// parse, else the first flag that did not, as an *Error naming the
// setting; any other command-line problem (an unknown flag, an argument)
// as an *Error naming "flags"; and on -help or -h, flag.ErrHelp after
// printing every flag to help.
func (b *Binder) Parse(args []string, help io.Writer) error {
	if b.envErr != nil {
		return b.envErr
	}
	if err := b.fs.Parse(args); err != nil {
		if b.flagErr != nil {
			return b.flagErr
		}
		if errors.Is(err, flag.ErrHelp) {
			b.fs.SetOutput(help)
			b.fs.PrintDefaults()
			return err
		}
		return &Error{Setting: "flags", Problem: err.Error()}
	}
	if b.fs.NArg() > 0 {
		return &Error{Setting: "flags", Problem: fmt.Sprintf("unexpected argument %q", b.fs.Arg(0))}
	}
	return nil
}

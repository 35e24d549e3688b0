package settings

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"strconv"
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
	b.value(env, fmt.Sprintf("%s (env %s, default %s)", usage, env, *p), false, func(s string) *Error {
		v, err := time.ParseDuration(s)
		if err != nil {
			return &Error{Setting: env, Problem: fmt.Sprintf("%q is not a duration (e.g. %s)", s, example)}
		}
		*p = v
		return nil
	}, aliases...)
}

// Switch binds *p to the environment variable env and its flag, a boolean
// flag (--name alone is true, --name=false false). A value other than
// true or false (or 1, 0, t, f in any case, as strconv.ParseBool reads
// them) is an *Error naming env.
func (b *Binder) Switch(p *bool, env, usage string) {
	b.value(env, fmt.Sprintf("%s (env %s, default %t)", usage, env, *p), true, func(s string) *Error {
		v, err := strconv.ParseBool(s)
		if err != nil {
			return &Error{Setting: env, Problem: fmt.Sprintf("%q is not true or false", s)}
		}
		*p = v
		return nil
	})
}

// Bytes binds *p, a number of bytes, like String binds a string: a whole
// number, optionally followed by KiB, MiB or GiB (10485760, 10MiB). A value
// that is not one is an *Error naming env; so is a negative one.
func (b *Binder) Bytes(p *int64, env, usage string) {
	b.value(env, fmt.Sprintf("%s (env %s, default %d)", usage, env, *p), false, func(s string) *Error {
		v, err := ParseBytes(s)
		if err != nil {
			return &Error{Setting: env, Problem: err.Error()}
		}
		*p = v
		return nil
	})
}

// ParseBytes reads a number of bytes: a whole number, optionally followed
// by KiB, MiB or GiB.
func ParseBytes(s string) (int64, error) {
	num, mult := strings.TrimSpace(s), int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}} {
		if n, ok := strings.CutSuffix(num, u.suffix); ok {
			num, mult = strings.TrimSpace(n), u.mult
			break
		}
	}
	v, err := strconv.ParseInt(num, 10, 64)
	if err != nil || v < 0 || v > math.MaxInt64/mult {
		return 0, fmt.Errorf("%q is not a number of bytes (e.g. 10485760 or 10MiB)", s)
	}
	return v * mult, nil
}

// value binds a setting read by parse from env and from its flag (and
// aliases); the first value that does not parse is kept to be reported by
// Parse. boolFlag makes the flag a switch (--name alone is "true").
func (b *Binder) value(env, usage string, boolFlag bool, parse func(string) *Error, aliases ...string) {
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
	if boolFlag {
		b.fs.BoolFunc(FlagName(env), usage, set)
	} else {
		b.fs.Func(FlagName(env), usage, set)
	}
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

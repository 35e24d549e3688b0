package settings_test

import (
	"bytes"
	"errors"
	"flag"
	"strings"
	"testing"
	"time"

	"github.com/batonhq/baton/settings"
)

type values struct {
	URL      string
	TTL      time.Duration
	Idle     time.Duration
	JSON     bool
	Insecure bool
	Chunk    int64
}

// bind binds a small set of settings over the environment m.
func bind(m map[string]string) (*settings.Binder, *values) {
	v := &values{URL: "default-url", TTL: 6 * time.Second, Idle: time.Hour, Chunk: 10 << 20}
	b := settings.NewBinder("test", func(k string) string { return m[k] })
	b.String(&v.URL, "DATABASE_URL", "connection URL")
	b.Duration(&v.TTL, "BATON_LEASE_TTL", "lease TTL", "10s, 500ms")
	b.Duration(&v.Idle, "BATON_SHAPE_IDLE_TIMEOUT", "idle timeout", "24h, 0 to disable", "shape-idle-timeout")
	b.Bool(&v.JSON, "json", "print JSON")
	b.Switch(&v.Insecure, "BATON_INSECURE", "serve without a secret")
	b.Bytes(&v.Chunk, "BATON_SHAPE_CHUNK_BYTES_THRESHOLD", "chunk size")
	return b, v
}

func TestBinderSources(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		args []string
		want values
	}{
		{name: "defaults", want: values{URL: "default-url", TTL: 6 * time.Second, Idle: time.Hour, Chunk: 10 << 20}},
		{name: "env", env: map[string]string{"DATABASE_URL": "e", "BATON_LEASE_TTL": "5s"},
			want: values{URL: "e", TTL: 5 * time.Second, Idle: time.Hour, Chunk: 10 << 20}},
		{name: "empty env keeps the default", env: map[string]string{"DATABASE_URL": "", "BATON_LEASE_TTL": ""},
			want: values{URL: "default-url", TTL: 6 * time.Second, Idle: time.Hour, Chunk: 10 << 20}},
		{name: "flag wins over env", env: map[string]string{"DATABASE_URL": "e", "BATON_LEASE_TTL": "5s"},
			args: []string{"--database-url=f", "-baton-lease-ttl", "4s"},
			want: values{URL: "f", TTL: 4 * time.Second, Idle: time.Hour, Chunk: 10 << 20}},
		{name: "alias", args: []string{"--shape-idle-timeout=0", "-json"},
			want: values{URL: "default-url", TTL: 6 * time.Second, JSON: true, Chunk: 10 << 20}},
		{name: "switch and bytes from env", env: map[string]string{"BATON_INSECURE": "true", "BATON_SHAPE_CHUNK_BYTES_THRESHOLD": "4096"},
			want: values{URL: "default-url", TTL: 6 * time.Second, Idle: time.Hour, Insecure: true, Chunk: 4096}},
		{name: "switch alone and bytes with a unit", args: []string{"--baton-insecure", "--baton-shape-chunk-bytes-threshold", "2MiB"},
			want: values{URL: "default-url", TTL: 6 * time.Second, Idle: time.Hour, Insecure: true, Chunk: 2 << 20}},
		{name: "switch flag over env", env: map[string]string{"BATON_INSECURE": "1"}, args: []string{"--baton-insecure=false"},
			want: values{URL: "default-url", TTL: 6 * time.Second, Idle: time.Hour, Chunk: 10 << 20}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, v := bind(tt.env)
			if err := b.Parse(tt.args, nil); err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if *v != tt.want {
				t.Fatalf("got %+v, want %+v", *v, tt.want)
			}
		})
	}
}

func TestBinderErrors(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		args    []string
		setting string
		problem string
	}{
		{"env duration", map[string]string{"BATON_LEASE_TTL": "6"}, nil, "BATON_LEASE_TTL", `"6" is not a duration (e.g. 10s, 500ms)`},
		{"env duration before flags", map[string]string{"BATON_LEASE_TTL": "x"}, []string{"--nope"}, "BATON_LEASE_TTL", `"x" is not a duration (e.g. 10s, 500ms)`},
		{"flag duration", nil, []string{"--baton-lease-ttl=soon"}, "BATON_LEASE_TTL", `"soon" is not a duration (e.g. 10s, 500ms)`},
		{"alias duration", nil, []string{"--shape-idle-timeout", "a day"}, "BATON_SHAPE_IDLE_TIMEOUT", `"a day" is not a duration (e.g. 24h, 0 to disable)`},
		{"env switch", map[string]string{"BATON_INSECURE": "yes"}, nil, "BATON_INSECURE", `"yes" is not true or false`},
		{"flag switch", nil, []string{"--baton-insecure=maybe"}, "BATON_INSECURE", `"maybe" is not true or false`},
		{"env bytes", map[string]string{"BATON_SHAPE_CHUNK_BYTES_THRESHOLD": "10MB"}, nil, "BATON_SHAPE_CHUNK_BYTES_THRESHOLD", `"10MB" is not a number of bytes (e.g. 10485760 or 10MiB)`},
		{"negative bytes", nil, []string{"--baton-shape-chunk-bytes-threshold=-1"}, "BATON_SHAPE_CHUNK_BYTES_THRESHOLD", `"-1" is not a number of bytes (e.g. 10485760 or 10MiB)`},
		{"unknown flag", nil, []string{"--nope"}, "flags", "flag provided but not defined: -nope"},
		{"flag without value", nil, []string{"--baton-lease-ttl"}, "flags", "flag needs an argument: -baton-lease-ttl"},
		{"argument", nil, []string{"extra"}, "flags", `unexpected argument "extra"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, _ := bind(tt.env)
			err := b.Parse(tt.args, nil)
			var e *settings.Error
			if !errors.As(err, &e) || e.Setting != tt.setting || e.Problem != tt.problem {
				t.Fatalf("Parse = %v, want %s: %s", err, tt.setting, tt.problem)
			}
			if !settings.IsError(err) || err.Error() != tt.setting+": "+tt.problem {
				t.Fatalf("IsError(%v) = false or Error() = %q", err, err.Error())
			}
		})
	}
}

func TestBinderHelp(t *testing.T) {
	var out bytes.Buffer
	b, _ := bind(nil)
	err := b.Parse([]string{"-h"}, &out)
	if !errors.Is(err, flag.ErrHelp) || !settings.IsError(err) {
		t.Fatalf("Parse(-h) = %v, want flag.ErrHelp", err)
	}
	for _, want := range []string{
		"-database-url", "(env DATABASE_URL)", `(default "default-url")`,
		"-baton-lease-ttl", "(env BATON_LEASE_TTL, default 6s)",
		"-shape-idle-timeout", "same as -baton-shape-idle-timeout", "-json",
		"-baton-insecure", "(env BATON_INSECURE, default false)",
		"-baton-shape-chunk-bytes-threshold", "(env BATON_SHAPE_CHUNK_BYTES_THRESHOLD, default 10485760)",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("help lacks %q:\n%s", want, out.String())
		}
	}
}

func TestIsError(t *testing.T) {
	for _, tt := range []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"plain", errors.New("x"), false},
		{"error", &settings.Error{Setting: "S", Problem: "p"}, true},
		{"wrapped", errors.Join(errors.New("ctx"), &settings.Error{Setting: "S", Problem: "p"}), true},
		{"help", flag.ErrHelp, true},
	} {
		if got := settings.IsError(tt.err); got != tt.want {
			t.Errorf("%s: IsError = %v, want %v", tt.name, got, tt.want)
		}
	}
}

// TestHelpWriter: -help prints the header, then the flags, and is the
// flag package's help request.
func TestHelpWriter(t *testing.T) {
	var buf bytes.Buffer
	b := settings.NewBinder("tool sub", func(string) string { return "" })
	var v string
	b.String(&v, "SOME_SETTING", "what it does")
	err := b.Parse([]string{"--help"}, settings.HelpWriter(&buf, "Usage:\n  tool sub [flags]\n\n"))
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("Parse(--help) = %v, want flag.ErrHelp", err)
	}
	if out := buf.String(); !strings.HasPrefix(out, "Usage:\n  tool sub [flags]\n\n") || !strings.Contains(out, "-some-setting") {
		t.Fatalf("help output:\n%s", out)
	}
}

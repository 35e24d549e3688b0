package main

import (
	"testing"

	"github.com/batonhq/baton/tests/conformance"
)

// TestExitCode: a failed check makes the kit exit 1; passed and skipped
// checks do not (make conformance-all failed on a SKIP before).
func TestExitCode(t *testing.T) {
	pass := conformance.Result{Name: "p", OK: true}
	fail := conformance.Result{Name: "f"}
	skip := conformance.Result{Name: "s", Skipped: true}
	for _, c := range []struct {
		name    string
		results []conformance.Result
		want    int
	}{
		{"all passed", []conformance.Result{pass, pass}, 0},
		{"one skipped", []conformance.Result{pass, skip}, 0},
		{"one failed", []conformance.Result{pass, skip, fail}, 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := exitCode(c.results); got != c.want {
				t.Errorf("exitCode = %d, want %d", got, c.want)
			}
		})
	}
}

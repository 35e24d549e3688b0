package shapes_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestImportsNoStreamingClient pins the package graph: shapes and
// replication are peers that meet at txn and storage, so shapes (and the
// packages under it) never link the replication protocol, gRPC or the
// lease client. It names each import that crosses the line.
func TestImportsNoStreamingClient(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}:{{join .Imports \" \"}}", "./...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps ./...: %v\n%s", err, out)
	}
	forbidden := func(pkg string) bool {
		for _, f := range []string{
			"github.com/batonhq/baton/worker/internal/replication",
			"github.com/batonhq/baton/worker/lease",
			"github.com/batonhq/baton/proto/baton/v1",
			"github.com/jackc/pglogrepl",
			"google.golang.org/grpc",
		} {
			if pkg == f || strings.HasPrefix(pkg, f+"/") {
				return true
			}
		}
		return false
	}
	listed := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		pkg, imports, _ := strings.Cut(line, ":")
		listed++
		if forbidden(pkg) {
			continue // reported where it is imported from
		}
		for _, imp := range strings.Fields(imports) {
			if forbidden(imp) {
				t.Errorf("%s imports %s", pkg, imp)
			}
		}
	}
	if listed < 10 {
		t.Fatalf("go list -deps listed %d packages; want the whole graph:\n%s", listed, out)
	}
}

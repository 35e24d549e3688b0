package shapes

import (
	"fmt"
	"os"
	"strconv"
	"testing"

	"github.com/batonhq/baton/worker/internal/storage"
)

// TestMain: with BATON_TEST_OPEN_FILES=n, the process keeps at most n
// shape logs' active segments open (storage.SetOpenFileLimit), so every
// test also runs with shape logs closing and reopening their files
// between writes: `make test` runs the package once so (Makefile).
func TestMain(m *testing.M) {
	if v := os.Getenv("BATON_TEST_OPEN_FILES"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			fmt.Fprintf(os.Stderr, "BATON_TEST_OPEN_FILES=%q: not a number\n", v)
			os.Exit(2)
		}
		storage.SetOpenFileLimit(n)
	}
	os.Exit(m.Run())
}

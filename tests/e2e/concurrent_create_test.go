package e2e_test

import (
	"fmt"
	"net/url"
	"sync"
	"testing"

	"github.com/batonhq/baton/tests/pgtest"
)

// TestShapeConcurrentCreation: many clients asking at once for the same
// new definitions get one shape per definition (one handle, one folder),
// while different definitions are created side by side.
func TestShapeConcurrentCreation(t *testing.T) {
	t.Parallel()
	pg := pgtest.Start(t, pgtest.Options{})
	execSQL(t, pg,
		"CREATE TABLE items (id int PRIMARY KEY, grp int)",
		"INSERT INTO items SELECT g, g % 5 FROM generate_series(1, 100) g")
	storage := t.TempDir()
	base := newActivePod(t, pg, "a", storage).URL()

	const defs, perDef = 5, 6
	handles := make([][]string, defs)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for d := 0; d < defs; d++ {
		for i := 0; i < perDef; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				q := url.Values{"table": {"items"}, "offset": {"-1"}, "where": {"grp = $1"}, "params[1]": {fmt.Sprint(d)}}
				r := protoGet(t, base, q, nil)
				mu.Lock()
				defer mu.Unlock()
				if r.Status != 200 {
					t.Errorf("GET grp = %d: %d %s", d, r.Status, r.Text())
					return
				}
				handles[d] = append(handles[d], r.Header.Get("electric-handle"))
			}()
		}
	}
	wg.Wait()
	seen := map[string]bool{}
	for d, hs := range handles {
		for _, h := range hs {
			if h != hs[0] {
				t.Errorf("grp = %d: handles %v; want one", d, hs)
				break
			}
		}
		if len(hs) > 0 {
			if seen[hs[0]] {
				t.Errorf("grp = %d shares handle %s with another definition", d, hs[0])
			}
			seen[hs[0]] = true
		}
	}
	if dirs := shapeDirs(t, storage); len(dirs) != defs {
		t.Errorf("stored shapes %v; want %d", dirs, defs)
	}
}

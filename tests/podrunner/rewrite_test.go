package podrunner

import (
	"reflect"
	"testing"
)

func TestExpand(t *testing.T) {
	vars := map[string]string{"A": "a", "EMPTY": "", "POD_IP": "127.0.0.1"}
	lookup := func(k string) (string, bool) { v, ok := vars[k]; return v, ok }
	for _, tc := range []struct{ name, in, want string }{
		{"plain", "abc", "abc"},
		{"reference", "x$(A)y", "xay"},
		{"empty value", "x$(EMPTY)y", "xy"},
		{"undefined stays", "$(NOPE)", "$(NOPE)"},
		{"escaped", "$$(A)", "$(A)"},
		{"double dollar", "$$", "$"},
		{"lone dollar", "a$b", "a$b"},
		{"trailing dollar", "a$", "a$"},
		{"unclosed", "$(A", "$(A"},
		{"url", "http://$(POD_IP):3000", "http://127.0.0.1:3000"},
		{"shell syntax untouched", "${A}", "${A}"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := expand(tc.in, lookup); got != tc.want {
				t.Fatalf("expand(%q) = %q; want %q", tc.in, got, tc.want)
			}
		})
	}
}

func TestRewritePorts(t *testing.T) {
	ports := map[int]int{7070: 41000, 3000: 42000}
	for _, tc := range []struct {
		name, in, want string
		moved          []int
	}{
		{"wildcard listen", ":7070", ":41000", []int{7070}},
		{"loopback", "127.0.0.1:7070", "127.0.0.1:41000", []int{7070}},
		{"localhost", "localhost:3000", "localhost:42000", []int{3000}},
		{"all interfaces", "0.0.0.0:3000", "0.0.0.0:42000", []int{3000}},
		{"ipv6 wildcard", "[::]:3000", "[::]:42000", []int{3000}},
		{"url", "http://127.0.0.1:3000/v1", "http://127.0.0.1:42000/v1", []int{3000}},
		{"two", "127.0.0.1:7070,127.0.0.1:3000", "127.0.0.1:41000,127.0.0.1:42000", []int{7070, 3000}},
		{"another host", "postgres:7070", "postgres:7070", nil},
		{"another port", "127.0.0.1:70700", "127.0.0.1:70700", nil},
		{"not an address", "7070", "7070", nil},
		{"password", "postgres://u:7070@db:5432/x", "postgres://u:7070@db:5432/x", nil},
		{"time", "10:30", "10:30", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, moved := rewritePorts(tc.in, ports)
			if got != tc.want || !reflect.DeepEqual(moved, tc.moved) {
				t.Fatalf("rewritePorts(%q) = %q, %v; want %q, %v", tc.in, got, moved, tc.want, tc.moved)
			}
		})
	}
}

func TestMountRewriter(t *testing.T) {
	r := newMountRewriter(map[string]string{"/data": "/tmp/x/data", "/data/cache": "/tmp/y"})
	for in, want := range map[string]string{
		"/data":         "/tmp/x/data",
		"/data/":        "/tmp/x/data",
		"/data/a/b":     "/tmp/x/data/a/b",
		"/data/cache/z": "/tmp/y/z",
		"/database":     "/database",
		"data":          "data",
		"--dir=/data":   "--dir=/tmp/x/data",
		"x=/data":       "x=/data",
	} {
		if got := r.rewrite(in); got != want {
			t.Errorf("rewrite(%q) = %q; want %q", in, got, want)
		}
	}
}

package storage

import (
	"fmt"
	"strconv"
	"testing"
)

// BenchmarkSetAdd is what adding a member costs a creation (a folder made,
// its name and a STATE naming every member made durable, two checks) in a
// set that already has members members, and removing it again.
func BenchmarkSetAdd(b *testing.B) {
	for _, members := range []int{0, 1000, 10000} {
		b.Run(fmt.Sprintf("members=%d", members), func(b *testing.B) {
			s, err := OpenSet(b.TempDir(), 1, nil)
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			names := map[string]bool{}
			for i := range members {
				names[s.me.name()+"/0123456789ab-17336000000"+strconv.Itoa(100000+i)] = true
			}
			s.mu.Lock()
			s.members = names
			err = s.compactLocked()
			s.mu.Unlock()
			if err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for i := range b.N {
				dir, err := s.NewFolder("fedcba987654-1733600000" + strconv.Itoa(i))
				if err != nil {
					b.Fatal(err)
				}
				if err := s.Add(dir); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				if err := s.Remove(dir); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
		})
	}
}

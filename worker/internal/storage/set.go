package storage

import (
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
)

// Set is a durable, fenced set of folders in one directory: the shapes of
// a stream. It is fenced like a Log (per-Open owner folders with LIVE and
// STATE files, see the package doc), and a member's folder is created
// inside the owner folder of the Open that adds it, so that what a fenced
// Open creates is never confused with what a newer one creates. Members
// outlive the Open that added them: later Opens inherit them by name.
//
// Methods are safe for concurrent use; Add, Remove and Close wait for one
// another, never for another process.
type Set struct {
	root, dir, live string
	me              ownerID

	mu      sync.Mutex
	members map[string]bool // paths relative to root, with '/'
	tried   map[string]bool // folders of this Open passed to Add
	closed  bool
	err     error // sticky: a fencing or I/O error ends the writer

	// hook, when set (by tests), is called at the points of a write where
	// a writer may be stopped for a long time.
	hook func(hookPoint)
}

// setHeader starts a Set's STATE file.
const setHeader = "baton-set 1"

// OpenSet opens the set in root, creating root if missing, as the writer
// for epoch (at least 1), and takes it over as OpenWith takes a log over:
// every earlier Open is fenced, and the members they added or removed, as
// of this moment, are this Open's. It fails with ErrFenced if a newer
// Open exists. It removes what no longer belongs to the set: folders that
// earlier Opens created but did not add (or removed) and, once migrated,
// folders directly in root that are not members.
//
// A set opened for the first time in a root that already holds folders
// (the layout before sets: one folder per member directly in root) takes
// as members those of them for which legacy returns true; the others are
// removed. legacy is called for no other Open.
func OpenSet(root string, epoch uint64, legacy func(dir string) bool) (*Set, error) {
	if epoch == 0 {
		return nil, errors.New("open set: epoch must be at least 1")
	}
	if err := makeDir(root); err != nil {
		return nil, fmt.Errorf("open set: %w", err)
	}
	me, err := claim(root, epoch)
	if err != nil {
		return nil, fmt.Errorf("open set %s: %w", root, err)
	}
	s := &Set{root: root, dir: filepath.Join(root, me.name()), me: me, tried: map[string]bool{}}
	s.live = filepath.Join(s.dir, liveFileName)
	if err := s.takeOver(legacy); err != nil {
		os.RemoveAll(s.dir)
		return nil, fmt.Errorf("open set %s: %w", root, err)
	}
	s.collectGarbage()
	return s, nil
}

// takeOver reads the members the previous owner's STATE names (or the
// legacy layout's), writes them into this Open's STATE, and checks that
// this Open still owns the set.
func (s *Set) takeOver(legacy func(string) bool) error {
	members, found, err := latestSetState(s.root, s.me)
	if err != nil {
		return err
	}
	if !found {
		if members, err = legacyMembers(s.root, legacy); err != nil {
			return err
		}
	}
	s.members = members
	if err := s.writeState(members); err != nil {
		return err
	}
	if err := syncDir(s.root); err != nil {
		return err
	}
	return s.check()
}

// latestSetState reads the members named by the STATE of the highest
// owner below me that has one; found is false if none has.
func latestSetState(root string, me ownerID) (members map[string]bool, found bool, err error) {
	owners, err := listOwners(root)
	if err != nil {
		return nil, false, err
	}
	for i := len(owners) - 1; i >= 0; i-- {
		o := owners[i]
		if !o.less(me) {
			continue
		}
		members, err := readSetState(filepath.Join(root, o.name()))
		if errors.Is(err, fs.ErrNotExist) {
			continue // a claim that never completed
		}
		return members, true, err
	}
	return map[string]bool{}, false, nil
}

// legacyMembers lists the folders directly in root that legacy accepts.
func legacyMembers(root string, legacy func(string) bool) (map[string]bool, error) {
	out := map[string]bool{}
	if legacy == nil {
		return out, nil
	}
	entries, err := os.ReadDir(root)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", root, err)
	}
	for _, e := range entries {
		if _, owner := parseOwnerName(e.Name()); owner || !e.IsDir() || !validMemberName(e.Name()) {
			continue
		}
		if legacy(filepath.Join(root, e.Name())) {
			out[e.Name()] = true
		}
	}
	return out, nil
}

func readSetState(dir string) (map[string]bool, error) {
	b, err := os.ReadFile(filepath.Join(dir, stateFileName))
	if err != nil {
		return nil, err
	}
	bad := func(what string) (map[string]bool, error) {
		return nil, fmt.Errorf("%w: %s: %s", ErrCorrupt, filepath.Join(dir, stateFileName), what)
	}
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	if len(lines) < 3 || lines[0] != setHeader || lines[len(lines)-1] != "end" {
		return bad("not a complete set state")
	}
	var epoch uint64
	if _, err := fmt.Sscanf(lines[1], "epoch %d", &epoch); err != nil {
		return bad(err.Error())
	}
	members := map[string]bool{}
	for _, line := range lines[2 : len(lines)-1] {
		p, ok := strings.CutPrefix(line, "member ")
		if !ok || !validMemberPath(p) {
			return bad(fmt.Sprintf("line %q", line))
		}
		members[p] = true
	}
	if string(encodeSetState(epoch, members)) != string(b) {
		return bad("not in canonical form")
	}
	return members, nil
}

func encodeSetState(epoch uint64, members map[string]bool) []byte {
	paths := make([]string, 0, len(members))
	for p := range members {
		paths = append(paths, p)
	}
	slices.Sort(paths)
	var b strings.Builder
	b.Grow(32 + len(paths)*(len("member ")+64))
	fmt.Fprintf(&b, "%s\nepoch %d\n", setHeader, epoch)
	for _, p := range paths {
		b.WriteString("member ")
		b.WriteString(p)
		b.WriteByte('\n')
	}
	b.WriteString("end\n")
	return []byte(b.String())
}

// validMemberName reports whether name may name a member's folder: letters,
// digits, '-', '_' and '.', not starting with '.', not a name of fencing.
func validMemberName(name string) bool {
	if name == "" || len(name) > 200 || name[0] == '.' || name == liveFileName || name == stateFileName || strings.HasSuffix(name, tmpSuffix) {
		return false
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// validMemberPath reports whether p is a member path: "<owner>/<name>" or,
// for a migrated member, "<name>".
func validMemberPath(p string) bool {
	owner, name, nested := strings.Cut(p, "/")
	if !nested {
		_, isOwner := parseOwnerName(p)
		return !isOwner && validMemberName(p)
	}
	_, isOwner := parseOwnerName(owner)
	return isOwner && validMemberName(name)
}

func (s *Set) writeState(members map[string]bool) error {
	if err := WriteFileAtomic(s.dir, stateFileName, encodeSetState(s.me.epoch, members)); err != nil {
		return fmt.Errorf("write %s: %w", stateFileName, err)
	}
	return nil
}

func (s *Set) check() error { return checkLive(s.live, s.me) }

func (s *Set) at(p hookPoint) {
	if s.hook != nil {
		s.hook(p)
	}
}

// Members returns the folders of the members, in no particular order.
func (s *Set) Members() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.members))
	for p := range s.members {
		out = append(out, filepath.Join(s.root, filepath.FromSlash(p)))
	}
	return out
}

// NewFolder creates the folder of a future member, named name (letters,
// digits, '-', '_' and '.'), inside this Open's owner folder, and returns
// its path. The folder is not a member until Add returns nil; until then
// it is garbage to every other Open. It fails with ErrFenced once a newer
// Open took the set over, and if the folder exists.
func (s *Set) NewFolder(name string) (string, error) {
	if !validMemberName(name) {
		return "", fmt.Errorf("new member folder %q: not a valid name", name)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.errLocked(); err != nil {
		return "", err
	}
	if err := s.check(); err != nil {
		return "", s.failLocked(err)
	}
	dir := filepath.Join(s.dir, name)
	// Mkdir, not MkdirAll: once a newer Open removed this owner's folder,
	// nothing is created in it any more.
	if err := os.Mkdir(dir, 0o755); err != nil {
		return "", fmt.Errorf("new member folder: %w", err)
	}
	return dir, nil
}

// Add makes dir, a folder NewFolder returned, a member, durably: once it
// returns nil every later Open has it among its Members (until a Remove).
// It fails with ErrFenced once a newer Open took the set over; the folder
// may then be a member of that Open or garbage to it, so the caller must
// leave it alone. Whatever dir holds must be durable before Add is called.
func (s *Set) Add(dir string) error {
	rel, err := s.rel(dir)
	if err != nil {
		return err
	}
	if own, _, _ := strings.Cut(rel, "/"); own != s.me.name() || !strings.Contains(rel, "/") {
		return fmt.Errorf("add %s: not a folder of this Open", dir)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.errLocked(); err != nil {
		return err
	}
	if s.members[rel] {
		return nil
	}
	s.tried[rel] = true
	if err := syncDir(s.dir); err != nil { // the folder's name is durable before STATE names it
		return s.failLocked(err)
	}
	next := maps.Clone(s.members)
	next[rel] = true
	return s.commitLocked(next)
}

// Discard removes dir, a folder NewFolder returned that was never passed
// to Add (a creation that failed): no Open names it.
func (s *Set) Discard(dir string) error {
	rel, err := s.rel(dir)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if own, _, _ := strings.Cut(rel, "/"); own != s.me.name() || s.tried[rel] {
		return fmt.Errorf("discard %s: not a folder of this Open that was never added", dir)
	}
	return os.RemoveAll(dir)
}

// Remove ends the membership of the folders dirs, durably, then removes
// them: once it returns nil no later Open has them among its Members. It
// writes this Open's STATE without them and removes the folders only if
// this Open still owned the set after that (so never a folder a newer
// Open holds); it fails with ErrFenced otherwise, leaving them. Folders
// that are not members are ignored. A failure to remove a folder is
// returned, and the folder is garbage to every later Open.
func (s *Set) Remove(dirs ...string) error {
	var rels []string
	for _, d := range dirs {
		rel, err := s.rel(d)
		if err != nil {
			return err
		}
		rels = append(rels, rel)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.errLocked(); err != nil {
		return err
	}
	next := maps.Clone(s.members)
	var gone []string
	for _, rel := range rels {
		if next[rel] {
			delete(next, rel)
			gone = append(gone, rel)
		}
	}
	if len(gone) == 0 {
		return nil
	}
	if err := s.commitLocked(next); err != nil {
		return err
	}
	s.at(hookRemoving)
	var first error
	for _, rel := range gone {
		if err := os.RemoveAll(filepath.Join(s.root, filepath.FromSlash(rel))); err != nil && first == nil {
			first = fmt.Errorf("remove member: %w", err)
		}
	}
	// No fsync: a removal a crash undoes leaves garbage that the next Open
	// removes.
	return first
}

// commitLocked writes next as this Open's STATE, checks ownership, and
// only then makes it the members. The caller holds mu.
func (s *Set) commitLocked(next map[string]bool) error {
	w, err := beginWriteAt(s.live, s.me)
	if err != nil {
		return s.failLocked(err)
	}
	s.at(hookChecked)
	err = s.writeState(next)
	s.at(hookWritten)
	if cerr := w.finish(); err == nil {
		err = cerr
	}
	if err != nil {
		return s.failLocked(err)
	}
	s.members = next
	return nil
}

// Check reports ErrFenced once a newer Open took the set over (or the
// error that ended this one).
func (s *Set) Check() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.errLocked(); err != nil {
		return err
	}
	if err := s.check(); err != nil {
		return s.failLocked(err)
	}
	return nil
}

// Close ends this Open: its methods then return ErrClosed. It writes
// nothing; the members stay.
func (s *Set) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	return nil
}

func (s *Set) errLocked() error {
	if s.closed {
		return ErrClosed
	}
	return s.err
}

func (s *Set) failLocked(err error) error {
	if !errors.Is(err, ErrFenced) {
		if ferr := s.check(); errors.Is(ferr, ErrFenced) {
			err = fmt.Errorf("%w: %w", ferr, err)
		}
	}
	if s.err == nil {
		s.err = err
	}
	return err
}

// rel returns dir relative to the set's folder, with '/', if it is a
// member path.
func (s *Set) rel(dir string) (string, error) {
	rel, err := filepath.Rel(s.root, dir)
	if err != nil || !validMemberPath(filepath.ToSlash(rel)) {
		return "", fmt.Errorf("%s is not a member folder of the set in %s", dir, s.root)
	}
	return filepath.ToSlash(rel), nil
}

// collectGarbage removes, best effort, what is not part of this Open's
// set: in the folders of older owners, every entry that is not a member
// (their STATE files, folders they created but did not add, or removed),
// and the folders of those with no member left; directly in root, every
// folder that is not a member (only the layout before sets put folders
// there, and only binaries of that layout still do). Only an Open whose
// STATE is durable and that has just checked it still owns the set may
// call it: every later Open builds on that STATE or a later one, and only
// ever adds folders of its own, so what is garbage now stays garbage.
func (s *Set) collectGarbage() {
	used := map[string]bool{} // owner folders with members
	for p := range s.members {
		if owner, _, nested := strings.Cut(p, "/"); nested {
			used[owner] = true
		}
	}
	entries, err := os.ReadDir(s.root)
	if err != nil {
		return
	}
	for _, e := range entries {
		name := e.Name()
		o, isOwner := parseOwnerName(name)
		switch {
		case !e.IsDir() || o == markerOwner:
		case !isOwner:
			if !s.members[name] && validMemberName(name) {
				os.RemoveAll(filepath.Join(s.root, name))
			}
		case !o.less(s.me):
		case !used[name]:
			os.RemoveAll(filepath.Join(s.root, name))
		default:
			inner, err := os.ReadDir(filepath.Join(s.root, name))
			if err != nil {
				continue
			}
			for _, f := range inner {
				if !s.members[name+"/"+f.Name()] {
					os.RemoveAll(filepath.Join(s.root, name, f.Name()))
				}
			}
		}
	}
	// No fsync: a removal a crash undoes leaves garbage that the next Open
	// removes again.
}

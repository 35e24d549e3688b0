package storage

import (
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
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

	// addMu guards the group of Adds gathering (adding) and whether one
	// is being committed (Add).
	addMu      sync.Mutex
	adding     *addGroup
	committing bool

	mu      sync.Mutex
	members map[string]bool // paths relative to root, with '/'
	tried   map[string]bool // folders of this Open passed to Add
	gen     uint64          // the journal this Open's STATE names
	journal *os.File        // that journal, open for appending
	entries int             // lines in it
	closed  bool
	err     error // sticky: a fencing or I/O error ends the writer

	// journalLimit is how many lines the journal may hold before the next
	// change first writes them into STATE (0: the default).
	journalLimit int

	// hook, when set (by tests), is called at the points of a write where
	// a writer may be stopped for a long time.
	hook func(hookPoint)
}

// setHeader starts a Set's STATE file.
const setHeader = "baton-set 1"

// journalPrefix names an owner's journal files, JOURNAL.<gen>: the changes
// made since its STATE was written, one line each (see the package doc).
const journalPrefix = "JOURNAL."

// defaultJournalLimit is the default Set.journalLimit; a journal also
// goes into STATE once it has more lines than the set has members, so
// that reading a set costs at most twice its size.
const defaultJournalLimit = 4096

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
		if s.journal != nil {
			s.journal.Close()
		}
		os.RemoveAll(s.dir)
		return nil, fmt.Errorf("open set %s: %w", root, err)
	}
	s.collectGarbage()
	return s, nil
}

// takeOver reads the members the previous owner's STATE and journal name
// (or the legacy layout's), writes them into this Open's STATE with a new,
// empty journal, and checks that this Open still owns the set.
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
	if err := s.startJournal(1); err != nil {
		return err
	}
	if err := s.writeState(members, 1); err != nil {
		return err
	}
	if err := syncDir(s.root); err != nil {
		return err
	}
	return s.check()
}

// startJournal creates this Open's empty journal gen (its name is made
// durable by the STATE write that names it, which fsyncs the folder).
func (s *Set) startJournal(gen uint64) error {
	f, err := os.OpenFile(filepath.Join(s.dir, journalPrefix+strconv.FormatUint(gen, 10)), os.O_WRONLY|os.O_CREATE|os.O_EXCL|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("create journal: %w", err)
	}
	if s.journal != nil {
		s.journal.Close()
	}
	s.journal, s.gen, s.entries = f, gen, 0
	return nil
}

// latestSetState reads the members of the highest owner below me that has
// a STATE: those its STATE names, changed by its journal; found is false
// if no owner has a STATE.
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
		dir := filepath.Join(root, o.name())
		members, gen, err := readSetState(dir)
		if errors.Is(err, fs.ErrNotExist) {
			continue // a claim that never completed
		}
		if err != nil {
			return nil, false, err
		}
		// The journal is read after STATE (R5), up to its first torn line.
		return members, true, readJournal(filepath.Join(dir, journalPrefix+strconv.FormatUint(gen, 10)), members)
	}
	return map[string]bool{}, false, nil
}

// journalLine is one change of the members: op '+' (added) or '-'
// (removed), the member's path, and the CRC-32C of both, in hex.
func journalLine(op byte, rel string) string {
	body := string(op) + " " + rel
	return fmt.Sprintf("%s %08x\n", body, crc32.Checksum([]byte(body), castagnoli))
}

// readJournal applies the journal at path to members. A last line cut
// short (a write in progress, or a crash) ends it; a bad line before the
// last is corruption.
func readJournal(path string, members map[string]bool) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read journal: %w", err)
	}
	lines := strings.SplitAfter(string(b), "\n")
	for i, line := range lines {
		if line == "" {
			continue
		}
		op, rel, ok := parseJournalLine(line)
		if !ok {
			if i == len(lines)-1 {
				return nil // the torn tail
			}
			return fmt.Errorf("%w: %s: line %d: %q", ErrCorrupt, path, i+1, line)
		}
		if op == '+' {
			members[rel] = true
		} else {
			delete(members, rel)
		}
	}
	return nil
}

func parseJournalLine(line string) (op byte, rel string, ok bool) {
	body, ok := strings.CutSuffix(line, "\n")
	if !ok || len(body) < 12 || (body[0] != '+' && body[0] != '-') || body[1] != ' ' || body[len(body)-9] != ' ' {
		return 0, "", false
	}
	rel = body[2 : len(body)-9]
	if !validMemberPath(rel) || journalLine(body[0], rel) != line {
		return 0, "", false
	}
	return body[0], rel, true
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

// readSetState reads an owner's STATE: the members, and the generation of
// the journal that continues it.
func readSetState(dir string) (map[string]bool, uint64, error) {
	b, err := os.ReadFile(filepath.Join(dir, stateFileName))
	if err != nil {
		return nil, 0, err
	}
	bad := func(what string) (map[string]bool, uint64, error) {
		return nil, 0, fmt.Errorf("%w: %s: %s", ErrCorrupt, filepath.Join(dir, stateFileName), what)
	}
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	if len(lines) < 4 || lines[0] != setHeader || lines[len(lines)-1] != "end" {
		return bad("not a complete set state")
	}
	var epoch, gen uint64
	if _, err := fmt.Sscanf(lines[1]+"\n"+lines[2], "epoch %d\njournal %d", &epoch, &gen); err != nil {
		return bad(err.Error())
	}
	members := map[string]bool{}
	for _, line := range lines[3 : len(lines)-1] {
		p, ok := strings.CutPrefix(line, "member ")
		if !ok || !validMemberPath(p) {
			return bad(fmt.Sprintf("line %q", line))
		}
		members[p] = true
	}
	if string(encodeSetState(epoch, gen, members)) != string(b) {
		return bad("not in canonical form")
	}
	return members, gen, nil
}

func encodeSetState(epoch, gen uint64, members map[string]bool) []byte {
	paths := make([]string, 0, len(members))
	for p := range members {
		paths = append(paths, p)
	}
	slices.Sort(paths)
	var b strings.Builder
	b.Grow(48 + len(paths)*(len("member ")+64))
	fmt.Fprintf(&b, "%s\nepoch %d\njournal %d\n", setHeader, epoch, gen)
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

func (s *Set) writeState(members map[string]bool, gen uint64) error {
	if err := WriteFileAtomic(s.dir, stateFileName, encodeSetState(s.me.epoch, gen, members)); err != nil {
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
//
// Concurrent Adds are committed together (group commit): one fsync of
// this Open's folder and one journal write and fsync for all the folders
// that were waiting, each Add returning once the write holding its line
// is durable and checked. An Add that fails this way fails for every
// folder of its group, as the error is sticky in any case.
func (s *Set) Add(dir string) error {
	rel, err := s.rel(dir)
	if err != nil {
		return err
	}
	if own, _, _ := strings.Cut(rel, "/"); own != s.me.name() || !strings.Contains(rel, "/") {
		return fmt.Errorf("add %s: not a folder of this Open", dir)
	}
	s.addMu.Lock()
	g := s.adding
	if g == nil {
		g = &addGroup{lead: make(chan struct{}), done: make(chan struct{})}
		s.adding = g
		if !s.committing {
			s.committing = true
			close(g.lead)
		}
	}
	g.rels = append(g.rels, rel)
	s.addMu.Unlock()
	select {
	case <-g.done:
		return g.err
	case <-g.lead:
	}
	if g.taken.CompareAndSwap(false, true) {
		s.commitGroup(g)
	}
	<-g.done
	return g.err
}

// addGroup is Adds committed together.
type addGroup struct {
	rels  []string
	lead  chan struct{} // closed when one of the group is to commit it
	taken atomic.Bool   // one of the group has taken it on
	done  chan struct{}
	err   error
}

// commitGroup commits g, then hands the next group (which gathered while
// g was written) to one of its own Adds.
func (s *Set) commitGroup(g *addGroup) {
	s.addMu.Lock()
	if s.adding == g {
		s.adding = nil // closed to newcomers
	}
	s.addMu.Unlock()
	g.err = s.addAll(g.rels)
	close(g.done)
	s.addMu.Lock()
	if next := s.adding; next != nil {
		close(next.lead)
	} else {
		s.committing = false
	}
	s.addMu.Unlock()
}

// addAll makes rels (folders of this Open) members, durably.
func (s *Set) addAll(rels []string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.errLocked(); err != nil {
		return err
	}
	var lines strings.Builder
	var added []string
	for _, rel := range rels {
		if !s.members[rel] && !slices.Contains(added, rel) {
			added = append(added, rel)
			lines.WriteString(journalLine('+', rel))
		}
	}
	if len(added) == 0 {
		return nil
	}
	if err := s.compactIfFullLocked(); err != nil {
		return err
	}
	for _, rel := range added {
		s.tried[rel] = true
	}
	if err := syncDir(s.dir); err != nil { // the folders' names are durable before the journal names them
		return s.failLocked(err)
	}
	if err := s.appendLocked(lines.String()); err != nil {
		return err
	}
	for _, rel := range added {
		s.members[rel] = true
	}
	return nil
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
	var gone []string
	var lines strings.Builder
	seen := make(map[string]bool, len(rels))
	for _, rel := range rels {
		if s.members[rel] && !seen[rel] {
			seen[rel] = true
			gone = append(gone, rel)
			lines.WriteString(journalLine('-', rel))
		}
	}
	if len(gone) == 0 {
		return nil
	}
	if err := s.compactIfFullLocked(); err != nil {
		return err
	}
	if err := s.appendLocked(lines.String()); err != nil {
		return err
	}
	for _, rel := range gone {
		delete(s.members, rel)
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

// appendLocked appends lines to the journal, durably, and checks that
// this Open still owns the set: only then may the caller apply them. The
// caller holds mu.
func (s *Set) appendLocked(lines string) error {
	w, err := beginWriteAt(s.live, s.me)
	if err != nil {
		return s.failLocked(err)
	}
	s.at(hookChecked)
	if _, err = s.journal.WriteString(lines); err == nil {
		err = s.journal.Sync()
	}
	if err != nil {
		err = fmt.Errorf("write journal: %w", err)
	}
	s.at(hookWritten)
	if cerr := w.finish(); err == nil {
		err = cerr
	}
	if err != nil {
		return s.failLocked(err)
	}
	s.entries += strings.Count(lines, "\n")
	return nil
}

// compactIfFullLocked writes the members into a new STATE with a new,
// empty journal once the journal is full. The caller holds mu.
func (s *Set) compactIfFullLocked() error {
	limit := s.journalLimit
	if limit == 0 {
		limit = defaultJournalLimit
	}
	if s.entries < max(limit, len(s.members)) {
		return nil
	}
	return s.compactLocked()
}

// compactLocked writes the members into STATE with a new, empty journal,
// checks, and only then removes the old journal (R4). The caller holds mu.
func (s *Set) compactLocked() error {
	old := s.journal.Name()
	if err := s.startJournal(s.gen + 1); err != nil {
		return s.failLocked(err)
	}
	w, err := beginWriteAt(s.live, s.me)
	if err != nil {
		return s.failLocked(err)
	}
	s.at(hookChecked)
	err = s.writeState(s.members, s.gen)
	s.at(hookWritten)
	if cerr := w.finish(); err == nil {
		err = cerr
	}
	if err != nil {
		return s.failLocked(err)
	}
	s.at(hookRemoving)
	// A removal a crash undoes leaves garbage that the next Open removes.
	os.Remove(old)
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
	if s.closed {
		return nil
	}
	s.closed = true
	return s.journal.Close()
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

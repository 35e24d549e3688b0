package storage

import (
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// stateHeader starts every STATE file: the format version of the log.
const stateHeader = "baton-log 2"

// metaPrefix starts STATE's optional line of metadata (SetMeta), in
// standard base64.
const metaPrefix = "meta "

// state is what an owner's STATE file says: the log as this owner sees
// it, apart from the records it appended to its own segments since (those
// are found by scanning them).
type state struct {
	epoch uint64
	acked uint64 // see ack.go
	// Compaction of the owner's own files (compact.go): its own files of
	// generation gen, and its plain files whose first seq is above upTo,
	// belong to the log; upTo also bounds the next compaction.
	gen, upTo uint64
	// from: the owner's own files whose first seq is below it were
	// truncated away.
	from uint64
	// meta is the caller's metadata (SetMeta), carried from owner to
	// owner; nil when never set.
	meta []byte
	// inherited are the segments of older owners (or of a format-1 log)
	// that are part of the log, in order, each with the exact number of
	// records and bytes that count: what an older writer adds after them is
	// never read.
	inherited []fixedSegment
}

// fixedSegment is a segment file of an older owner, cut at size.
type fixedSegment struct {
	path  string // relative to the log's folder, with '/'
	first uint64
	count int
	size  int64
}

func (s *state) encode() []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "%s\nepoch %d\nacked %d\ncompacted %d %d\nfrom %d\n", stateHeader, s.epoch, s.acked, s.gen, s.upTo, s.from)
	if len(s.meta) > 0 {
		fmt.Fprintf(&b, "%s%s\n", metaPrefix, base64.StdEncoding.EncodeToString(s.meta))
	}
	for _, f := range s.inherited {
		fmt.Fprintf(&b, "seg %s %d %d %d\n", f.path, f.first, f.count, f.size)
	}
	b.WriteString("end\n")
	return []byte(b.String())
}

// readState reads an owner folder's STATE file; a missing one is
// fs.ErrNotExist.
func readState(dir string) (state, error) {
	b, err := os.ReadFile(filepath.Join(dir, stateFileName))
	if err != nil {
		return state{}, err
	}
	var s state
	bad := func(what string) (state, error) {
		return state{}, fmt.Errorf("%w: %s: %s", ErrCorrupt, filepath.Join(dir, stateFileName), what)
	}
	// Lines of any length (the metadata's); the canonical form, checked
	// below, ends with a newline.
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	if len(lines) < 6 || lines[0] != stateHeader || lines[len(lines)-1] != "end" {
		return bad("not a complete format-2 state")
	}
	if _, err := fmt.Sscanf(strings.Join(lines[1:5], "\n"), "epoch %d\nacked %d\ncompacted %d %d\nfrom %d",
		&s.epoch, &s.acked, &s.gen, &s.upTo, &s.from); err != nil {
		return bad(err.Error())
	}
	segLines := lines[5 : len(lines)-1]
	if len(segLines) > 0 && strings.HasPrefix(segLines[0], metaPrefix) {
		if s.meta, err = base64.StdEncoding.DecodeString(segLines[0][len(metaPrefix):]); err != nil || len(s.meta) == 0 {
			return bad("meta line")
		}
		segLines = segLines[1:]
	}
	for _, line := range segLines {
		var f fixedSegment
		if _, err := fmt.Sscanf(line, "seg %s %d %d %d", &f.path, &f.first, &f.count, &f.size); err != nil || f.count <= 0 {
			return bad(fmt.Sprintf("line %q", line))
		}
		s.inherited = append(s.inherited, f)
	}
	if string(s.encode()) != string(b) {
		return bad("not in canonical form")
	}
	return s, nil
}

// ownLive reports whether f, one of an owner's own segment files, belongs
// to the log that s describes.
func (s *state) ownLive(f segmentFile) bool {
	if f.first < s.from {
		return false
	}
	if f.gen != 0 {
		return f.gen == s.gen
	}
	return f.first > s.upTo
}

// view is a log as read from an owner's state and files.
type view struct {
	segs    []*segment
	lastSeq uint64
	lastEnd uint64
	st      state
	own     []string // the owner's own files read (to fsync)
}

// readView reads the log that owner p left: p's STATE, then p's own files
// (listed after the STATE was read: see the package doc). An inherited
// segment must hold exactly the records and bytes STATE says (more bytes
// are ignored); p's own files are read up to their first torn or bad
// record, which may only be in the last one. Only that last file's records
// are verified here, checksums included; of the others only the headers
// are read (scanHeads), so that a takeover reads about one segment's
// bytes, whatever the size of the log.
func readView(root string, p ownerID) (view, error) {
	dir := filepath.Join(root, p.name())
	st, err := readState(dir)
	if err != nil {
		return view{}, err
	}
	type candidate struct {
		path  string
		first uint64
		fixed *fixedSegment
	}
	var cands []candidate
	for i := range st.inherited {
		f := &st.inherited[i]
		if strings.Contains(f.path, "..") || filepath.IsAbs(f.path) {
			return view{}, fmt.Errorf("%w: segment path %q", ErrCorrupt, f.path)
		}
		cands = append(cands, candidate{path: filepath.Join(root, filepath.FromSlash(f.path)), first: f.first, fixed: f})
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return view{}, fmt.Errorf("list %s: %w", dir, err)
	}
	for _, e := range entries {
		f, ok := parseSegmentFile(e.Name())
		if ok && e.Type().IsRegular() && st.ownLive(f) {
			cands = append(cands, candidate{path: filepath.Join(dir, f.name), first: f.first})
		}
	}
	sort.Slice(cands, func(i, j int) bool { return cands[i].first < cands[j].first })
	v := view{st: st}
	for i, c := range cands {
		if len(v.segs) > 0 && c.first != v.lastSeq+1 {
			return view{}, fmt.Errorf("%w: segment %s follows record %d", ErrCorrupt, c.path, v.lastSeq)
		}
		limit := int64(-1)
		if c.fixed != nil {
			limit = c.fixed.size
		}
		last := i == len(cands)-1
		scan := scanSegment
		if c.fixed != nil || !last {
			// Known complete: an inherited segment was read to its end by
			// the Open that inherited it, and an owner's file other than
			// its last was fsynced before its next was created (write).
			// Its headers give the index; Read verifies each record.
			scan = scanHeads
		}
		res, err := scan(c.path, c.first, v.lastEnd, limit)
		if err != nil {
			return view{}, err
		}
		n := len(res.seg.offsets)
		switch {
		case c.fixed != nil && (n != c.fixed.count || res.seg.size != c.fixed.size):
			return view{}, fmt.Errorf("%w: %s holds %d records in %d bytes, want %d in %d",
				ErrCorrupt, c.path, n, res.seg.size, c.fixed.count, c.fixed.size)
		case c.fixed == nil && !last && (res.tail != nil || n == 0):
			return view{}, fmt.Errorf("%w: %s: %v (%d records)", ErrCorrupt, c.path, res.tail, n)
		}
		if c.fixed == nil {
			v.own = append(v.own, c.path)
		}
		if n == 0 {
			continue // the owner's last file, created but not written
		}
		v.segs = append(v.segs, res.seg)
		v.lastSeq = c.first + uint64(n) - 1
		v.lastEnd = res.lastEnd
	}
	return v, nil
}

// latestView reads the log left by the highest owner below me (any owner
// when me is nil) that has a STATE file. It returns an empty view if there
// is none.
func latestView(root string, me *ownerID) (view, ownerID, error) {
	owners, err := listOwners(root)
	if err != nil {
		return view{}, ownerID{}, err
	}
	for i := len(owners) - 1; i >= 0; i-- {
		o := owners[i]
		if me != nil && !o.less(*me) {
			continue
		}
		v, err := readView(root, o)
		if errors.Is(err, fs.ErrNotExist) && !fileExists(filepath.Join(root, o.name(), stateFileName)) {
			continue // a claim that never completed
		}
		return v, o, err
	}
	return view{}, ownerID{}, nil
}

func fileExists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

// writeState replaces this Open's STATE durably: segs (the log) gives the
// inherited segments, st the rest.
func (l *Log) writeState(segs []*segment, st state) error {
	st.inherited = nil
	for _, s := range segs {
		if filepath.Dir(s.path) == l.dir {
			continue
		}
		rel, err := filepath.Rel(l.root, s.path)
		if err != nil {
			return err
		}
		st.inherited = append(st.inherited, fixedSegment{path: filepath.ToSlash(rel), first: s.firstSeq, count: len(s.offsets), size: s.size})
	}
	if err := WriteFileAtomic(l.dir, stateFileName, st.encode()); err != nil {
		return fmt.Errorf("write %s: %w", stateFileName, err)
	}
	return nil
}

// collectGarbage removes, best effort, what older owners left that is not
// part of this Open's log: their STATE files, the files they wrote after
// being fenced, and the folders of owners none of whose files are part of
// it; and format-1 files no longer used. Only an owner whose STATE is
// durable and that has just checked it still owns the log may call it:
// every later owner reads its log from that STATE or a later one, so what
// is garbage now stays garbage.
func (l *Log) collectGarbage() {
	used := map[string]bool{}
	usedDirs := map[string]bool{}
	for _, s := range l.segs {
		used[s.path] = true
		usedDirs[filepath.Dir(s.path)] = true
	}
	owners, err := listOwners(l.root)
	if err != nil {
		return
	}
	for _, o := range owners {
		if !o.less(l.me) {
			continue
		}
		dir := filepath.Join(l.root, o.name())
		if !usedDirs[dir] {
			os.RemoveAll(dir)
			continue
		}
		entries, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, e := range entries {
			if p := filepath.Join(dir, e.Name()); !used[p] {
				os.RemoveAll(p)
			}
		}
	}
	if migrated(l.root) {
		entries, err := os.ReadDir(l.root)
		if err != nil {
			return
		}
		for _, e := range entries {
			p := filepath.Join(l.root, e.Name())
			_, isSeg := parseSegmentFile(e.Name())
			if (isSeg && !used[p]) || e.Name() == ackFileName || e.Name() == compactedFileName {
				os.Remove(p)
			}
		}
	}
	// No fsync: a removal a crash undoes leaves garbage that the next Open
	// removes again.
}

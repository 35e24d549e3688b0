package storage

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// Compaction replaces a prefix of the log, the records up to some seq U,
// with fewer records (the caller decides which: storage sees payloads as
// opaque). The replacement records are numbered so that the last one has
// seq U: records after U keep their seqs, Append and Sync go on, and the
// log's first seq moves up, as after TruncateBefore.
//
// # On-disk format
//
// An owner's compactions are numbered g = 1, 2, ... (STATE's "compacted g
// U"; 0 before the first). Compaction g writes its segment files into the
// owner's folder under names that carry g, "%020d-%020d.seg" (first seq,
// g), never used before, so a path always names the same content: a
// reader holding an old path either opens the old file or finds it gone,
// never finds other records there. The owner's own files in the log are
// then: every compacted file of generation g, and every plain file
// "%020d.seg" whose first seq is above U (and not below STATE's "from").
// Segments of older owners that the compaction replaced leave STATE's
// inherited list. Anything else is garbage (an older generation, a plain
// file the compaction replaced, or the files of a compaction that did not
// commit) and a later Open removes it.
//
// # Steps, and crashes between them
//
// Prepare writes the replacement records to temporary files (*.tmp) and
// fsyncs them, without blocking Append or Sync. Commit, which waits for a
// Sync in progress and holds off the next one: copies the records after U
// of the segment holding U (and the segment's planned appends) to a
// temporary file, then, if this Open still owns the log, renames the
// temporary files to generation g+1 names (garbage while STATE says g),
// fsyncs the folder, and replaces STATE: that rename is the commit point.
// If the check of ownership after it passes, it switches readers and
// Append to the new files and removes the old ones (never before: a newer
// Open that read the older STATE may be using them). A crash before the
// commit point leaves generation g (the new files are garbage); after it,
// generation g+1 (the old ones are).
//
// # Readers
//
// Read notices a swap (a counter bumped under the Log's lock) and reads
// again, so it returns the records of either the old or the new log, never
// a mix, and never fails because of a compaction.

// compactedFileName held, in format 1, the generation and bound of the
// last compaction ("gen <g> upto <U>\n").
const compactedFileName = "COMPACTED"

// compacted is what COMPACTED says (format 1), or STATE's "compacted".
type compacted struct {
	gen  uint64
	upTo uint64
}

func readCompacted(dir string) (compacted, error) {
	b, err := os.ReadFile(filepath.Join(dir, compactedFileName))
	if errors.Is(err, fs.ErrNotExist) {
		return compacted{}, nil
	}
	if err != nil {
		return compacted{}, fmt.Errorf("read %s: %w", compactedFileName, err)
	}
	var c compacted
	if _, err := fmt.Sscanf(string(b), "gen %d upto %d\n", &c.gen, &c.upTo); err != nil || c.String() != string(b) || c.gen == 0 {
		return compacted{}, fmt.Errorf("%w: %s holds %q", ErrCorrupt, compactedFileName, b)
	}
	return c, nil
}

func (c compacted) String() string { return fmt.Sprintf("gen %d upto %d\n", c.gen, c.upTo) }

// compactedName is the name of a segment file written by compaction gen.
func compactedName(firstSeq, gen uint64) string {
	return fmt.Sprintf("%020d-%020d%s", firstSeq, gen, segmentSuffix)
}

// segmentFile is a segment file found in the directory.
type segmentFile struct {
	first uint64
	gen   uint64 // 0 for a plain file
	name  string
}

// parseSegmentFile parses a plain or a compacted segment file name.
func parseSegmentFile(name string) (segmentFile, bool) {
	if first, ok := parseSegmentName(name); ok {
		return segmentFile{first: first, name: name}, true
	}
	base, ok := strings.CutSuffix(name, segmentSuffix)
	if !ok || len(base) != 41 || base[20] != '-' {
		return segmentFile{}, false
	}
	first, err1 := strconv.ParseUint(base[:20], 10, 64)
	gen, err2 := strconv.ParseUint(base[21:], 10, 64)
	if err1 != nil || err2 != nil || first == 0 || gen == 0 {
		return segmentFile{}, false
	}
	return segmentFile{first: first, gen: gen, name: name}, true
}

// live reports whether f belongs to the log that c describes.
func (c compacted) live(f segmentFile) bool {
	if f.gen != 0 {
		return f.gen == c.gen
	}
	return f.first > c.upTo
}

// segmentFiles lists dir's segment files, split into those of the log (in
// order of first seq) and garbage. It changes nothing.
func segmentFiles(dir string) (live, garbage []segmentFile, c compacted, err error) {
	if c, err = readCompacted(dir); err != nil {
		return nil, nil, c, err
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, nil, c, fmt.Errorf("list segments: %w", err)
	}
	for _, e := range entries {
		f, ok := parseSegmentFile(e.Name())
		if !ok || !e.Type().IsRegular() {
			continue
		}
		if c.live(f) {
			live = append(live, f)
		} else {
			garbage = append(garbage, f)
		}
	}
	sort.Slice(live, func(i, j int) bool { return live[i].first < live[j].first })
	return live, garbage, c, nil
}

// removeGarbage removes the segment files that are not part of the log
// (see segmentFiles) and returns what COMPACTED says. Only a writer holding
// the directory lock may call it.
func removeGarbage(dir string) (compacted, error) {
	_, garbage, c, err := segmentFiles(dir)
	if err != nil || len(garbage) == 0 {
		return c, err
	}
	for _, f := range garbage {
		if err := os.Remove(filepath.Join(dir, f.name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return c, fmt.Errorf("remove compacted-away segment %s: %w", f.name, err)
		}
	}
	return c, syncDir(dir)
}

// Compaction is a prepared replacement of a prefix of the log; see
// PrepareCompaction. Commit or Abort it.
type Compaction struct {
	l      *Log
	upTo   uint64
	gen    uint64 // the generation Commit creates
	staged []stagedSegment
	done   bool
}

// stagedSegment is a compacted segment file written to a temporary name.
type stagedSegment struct {
	tmp string
	seg *segment // path: the final name
}

// PrepareCompaction writes recs, the replacement of every record with seq
// up to upTo, to temporary files; Commit puts them in place. recs must be
// non-empty, with increasing EndLSNs, the last one not above the EndLSN of
// record upTo; they are numbered upTo-len(recs)+1 to upTo (Seq and Epoch
// are set here; Epoch is this Log's). upTo must be durable, and above the
// bound of the previous compaction. It does not block Append, Sync or
// Read; one compaction at a time may be prepared per Log.
func (l *Log) PrepareCompaction(upTo uint64, recs []Record) (*Compaction, error) {
	if len(recs) == 0 || uint64(len(recs)) > upTo {
		return nil, fmt.Errorf("prepare compaction: %d records cannot end at seq %d", len(recs), upTo)
	}
	l.syncMu.Lock()
	prev := compacted{gen: l.st.gen, upTo: l.st.upTo}
	l.syncMu.Unlock()
	if upTo <= prev.upTo {
		return nil, fmt.Errorf("prepare compaction: seq %d is not above the last compaction's %d", upTo, prev.upTo)
	}
	last, err := l.Read(upTo, 1)
	if err != nil {
		return nil, fmt.Errorf("prepare compaction: %w", err)
	}
	if len(last) == 0 || last[0].Seq != upTo {
		return nil, fmt.Errorf("prepare compaction: record %d is not durable", upTo)
	}
	var prevEnd uint64
	for i := range recs {
		if recs[i].EndLSN <= prevEnd || len(recs[i].Payload) > MaxPayload {
			return nil, fmt.Errorf("prepare compaction: record %d: end LSN %d after %d, or payload too big", i, recs[i].EndLSN, prevEnd)
		}
		prevEnd = recs[i].EndLSN
	}
	if prevEnd > last[0].EndLSN {
		return nil, fmt.Errorf("prepare compaction: last end LSN %d is above record %d's %d", prevEnd, upTo, last[0].EndLSN)
	}
	c := &Compaction{l: l, upTo: upTo, gen: prev.gen + 1}
	seq := upTo - uint64(len(recs)) + 1
	var buf []byte
	var cur *segment
	flush := func() error {
		if cur == nil {
			return nil
		}
		tmp, err := writeTemp(l.dir, filepath.Base(cur.path), buf)
		if err != nil {
			return err
		}
		c.staged = append(c.staged, stagedSegment{tmp: tmp, seg: cur})
		cur, buf = nil, nil
		return nil
	}
	for i := range recs {
		r := recs[i]
		r.Seq, r.Epoch = seq, l.me.epoch
		size := int64(recordHeaderSize + len(r.Payload))
		if cur != nil && cur.size > segmentHeaderSize && cur.size+size > l.segmentSize {
			if err := flush(); err != nil {
				c.Abort()
				return nil, fmt.Errorf("prepare compaction: %w", err)
			}
		}
		if cur == nil {
			cur = &segment{firstSeq: seq, path: filepath.Join(l.dir, compactedName(seq, c.gen)), size: segmentHeaderSize}
			buf = segmentHeader()
		}
		cur.offsets = append(cur.offsets, uint32(cur.size))
		buf = appendRecord(buf, &r)
		cur.size += size
		seq++
	}
	if err := flush(); err != nil {
		c.Abort()
		return nil, fmt.Errorf("prepare compaction: %w", err)
	}
	return c, nil
}

// writeTemp writes b to a new temporary file named after name and fsyncs
// it; it returns the file's path.
func writeTemp(dir, name string, b []byte) (string, error) {
	f, err := os.CreateTemp(dir, name+".*"+tmpSuffix)
	if err != nil {
		return "", err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name())
		return "", err
	}
	return f.Name(), nil
}

// Abort removes what Prepare wrote. It is a no-op after Commit.
func (c *Compaction) Abort() {
	if c.done {
		return
	}
	c.done = true
	for _, s := range c.staged {
		os.Remove(s.tmp)
	}
}

// Commit puts the compaction in place, atomically for readers and across
// crashes (see the Compaction doc), and returns the number of records and
// bytes of segment files it removed and added. It is fenced like Sync:
// ErrFenced once a newer Open took the directory over. A failure after
// the first rename is sticky, as in Sync (the writer must reopen). It waits
// for a Sync in progress and delays the next one while it copies the
// records after upTo that share upTo's segment.
func (c *Compaction) Commit() (removed, added int64, err error) {
	if c.done {
		return 0, 0, errors.New("commit compaction: already committed or aborted")
	}
	l := c.l
	l.syncMu.Lock()
	defer l.syncMu.Unlock()
	defer c.Abort()
	l.mu.RLock()
	err = l.stateErrLocked()
	segs := l.segs
	k := sort.Search(len(segs), func(i int) bool { return segs[i].firstSeq > c.upTo }) - 1
	// Appends planned into the segment holding upTo go to the tail file
	// instead. Append only ever moves planSeg to a new segment, so what is
	// decided here holds until the swap.
	appending := false
	if k >= 0 && k == len(segs)-1 {
		appending = l.planSeg == segs[k].firstSeq
		for _, ch := range l.pending {
			appending = appending || ch.segFirst == segs[k].firstSeq
		}
	}
	l.mu.RUnlock()
	if err != nil {
		return 0, 0, err
	}
	if l.st.gen+1 != c.gen {
		return 0, 0, errors.New("commit compaction: another compaction committed meanwhile")
	}
	if k < 0 {
		return 0, 0, fmt.Errorf("commit compaction: record %d is gone", c.upTo)
	}
	// segs[k] holds upTo (Prepare read it; records are not removed by anyone
	// but TruncateBefore and Commit, both under syncMu).
	s := segs[k]
	last := k == len(segs)-1
	var tail *stagedSegment
	var delta int64 // how much earlier records of s after upTo are in tail
	if n := int(c.upTo - s.firstSeq + 1); appending || n < len(s.offsets) {
		start := s.size
		if n < len(s.offsets) {
			start = int64(s.offsets[n])
		}
		delta = start - segmentHeaderSize
		if tail, err = c.stageTail(s, start); err != nil {
			return 0, 0, fmt.Errorf("commit compaction: %w", err)
		}
		c.staged = append(c.staged, *tail)
	}
	w, err := l.beginWrite()
	if err != nil {
		return 0, 0, l.fail(err)
	}
	err = c.install(tail, segs[:k+1], segs[k+1:], last, appending, delta)
	if cerr := w.finish(); err == nil {
		err = cerr
	}
	if err != nil {
		return 0, 0, l.fail(err)
	}
	for _, o := range segs[:k+1] {
		removed += o.size
	}
	for _, n := range c.staged {
		added += n.seg.size
	}
	// The old files are garbage now; a failure here leaves them to the
	// next Open.
	l.at(hookRemoving)
	return removed, added, removeFiles(segs[:k+1])
}

// stageTail copies the durable records of s from start on to a temporary
// file, the first segment after the compacted ones. The caller holds
// syncMu, so s does not grow meanwhile.
func (c *Compaction) stageTail(s *segment, start int64) (*stagedSegment, error) {
	f, err := os.Open(s.path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	buf := segmentHeader()
	buf = append(buf, make([]byte, s.size-start)...)
	if _, err := io.ReadFull(io.NewSectionReader(f, start, s.size-start), buf[segmentHeaderSize:]); err != nil {
		return nil, fmt.Errorf("read %s: %w", s.path, err)
	}
	first := c.upTo + 1
	t := &segment{firstSeq: first, path: filepath.Join(c.l.dir, compactedName(first, c.gen)), size: int64(len(buf))}
	n := int(c.upTo - s.firstSeq + 1)
	for _, off := range s.offsets[min(n, len(s.offsets)):] {
		t.offsets = append(t.offsets, uint32(int64(off)-(start-segmentHeaderSize)))
	}
	tmp, err := writeTemp(c.l.dir, filepath.Base(t.path), buf)
	if err != nil {
		return nil, err
	}
	return &stagedSegment{tmp: tmp, seg: t}, nil
}

// install renames the staged files, writes STATE, checks that this Open
// still owns the log, and switches the Log to the new files. The caller
// holds syncMu and has checked ownership.
func (c *Compaction) install(tail *stagedSegment, old, kept []*segment, last, appending bool, delta int64) error {
	l := c.l
	// From the first rename on, a failure leaves the directory in a state
	// this process no longer tracks: sticky, like a failed Sync.
	l.at(hookChecked)
	for _, s := range c.staged {
		if err := os.Rename(s.tmp, s.seg.path); err != nil {
			return l.fail(fmt.Errorf("install compacted segment: %w", err))
		}
	}
	if err := syncDir(l.dir); err != nil {
		return l.fail(err)
	}
	segs := make([]*segment, 0, len(c.staged)+len(kept))
	for _, s := range c.staged {
		segs = append(segs, s.seg)
	}
	segs = append(segs, kept...)
	next := l.st
	next.gen, next.upTo, next.from = c.gen, c.upTo, segs[0].firstSeq
	if err := l.writeState(segs, next); err != nil {
		return l.fail(err)
	}
	l.at(hookWritten)
	// The commit point; the old files are removed only after this check.
	if err := l.checkOwner(); err != nil {
		return l.fail(err)
	}
	c.done = true       // committed: nothing staged to remove any more
	var active *os.File // the new last segment, when it replaces the last one
	if last && tail != nil {
		var err error
		if active, err = os.OpenFile(tail.seg.path, os.O_RDWR, 0); err != nil {
			return l.fail(fmt.Errorf("open segment: %w", err))
		}
	}
	l.mu.Lock()
	l.segs = segs
	l.swaps++
	if appending {
		c.moveAppends(old[len(old)-1].firstSeq, delta)
	}
	l.notifyLocked()
	l.mu.Unlock()
	l.st = next
	if last {
		// The old last segment is removed; Append goes on in the tail file,
		// or in a new segment (write opens one when l.active is nil).
		if l.active != nil {
			l.active.Close()
		}
		// The tail's records were copied into a file synced above.
		l.activeUnsynced = false
		l.active, l.activeSize = active, 0
		if active != nil {
			l.activeSize = tail.seg.size
		}
		l.idlePath = ""
		openFiles.note(l)
	}
	return nil
}

// moveAppends re-plans the records appended to the segment that started
// at from, now copied to the tail file delta bytes earlier. The caller
// holds mu.
func (c *Compaction) moveAppends(from uint64, delta int64) {
	l := c.l
	for _, ch := range l.pending {
		if ch.segFirst != from {
			continue
		}
		ch.segFirst = c.upTo + 1
		for i := range ch.offsets {
			ch.offsets[i] -= uint32(delta)
		}
	}
	if l.planSeg == from {
		l.planSeg = c.upTo + 1
		l.planSize -= delta
	}
}

package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"time"
)

// Goals of issues 3 and 14.
const (
	// Baton's changes/s, start-up included, ≥ this × pg_recvlogical's
	// (issue 14): 1-row transactions, and larger ones.
	goalThroughputRatio1   = 0.9
	goalThroughputRatioBig = 0.8
	goalLiveP99            = 20 * time.Millisecond  // commit → waiting long-poll client
	goalSyncRatio          = 1.3                    // new shape ≤ 1.3× COPY (issue 14)
	goalSyncFirst          = 100 * time.Millisecond // its first chunk's headers within 100 ms
	goalSyncRSS            = 64 << 20               // worker peak RSS ≤ 64 MiB
)

// report is everything one run measured.
type report struct {
	cfg     config
	machine machine
	elapsed time.Duration

	storageFS string // what the worker's storage is on
	versions  string // of the binaries under test

	handoff *results
	kubelet *kubeletResults
	repl    *replResults
	live    *liveResults
	sync    *syncResults
	many    *manyResults
}

func (r *report) text() string {
	m := r.machine
	var b strings.Builder
	fmt.Fprintf(&b, "\nBaton benchmarks — %d cores, %s, %s, PostgreSQL %s\n", m.cores, m.model, m.goVersion, m.pgVersion)
	if r.handoff != nil {
		b.WriteString(r.handoff.text())
	}
	if r.kubelet != nil {
		b.WriteString(r.kubelet.text())
	}
	if r.repl != nil {
		b.WriteString("\n== Replication throughput ==\n\n")
		b.WriteString(r.repl.table(false))
		b.WriteString("\n" + r.repl.goalLine() + "\n\n")
		for _, d := range r.repl.details() {
			b.WriteString(d + "\n")
		}
	}
	if r.live != nil {
		b.WriteString("\n== Live latency ==\n\n")
		b.WriteString(r.live.table(false))
		b.WriteString("\n" + r.live.goalLine() + "\n\n")
		for _, d := range r.live.details() {
			b.WriteString(d + "\n")
		}
	}
	if r.sync != nil {
		b.WriteString("\n== Initial sync ==\n\n")
		b.WriteString(r.sync.table(false))
		b.WriteString("\n" + r.sync.goalLine() + "\n\n")
		for _, d := range r.sync.details() {
			b.WriteString(d + "\n")
		}
	}
	if r.many != nil {
		b.WriteString(r.many.text())
	}
	fmt.Fprintf(&b, "\n(run took %s)\n", r.elapsed.Round(100*time.Millisecond))
	return b.String()
}

// notesMarker starts the hand-written part of BENCHMARKS.md, which -write
// keeps as it is.
const notesMarker = "<!-- Hand-written notes below this line are kept by -write. -->"

func (r *report) markdown() string {
	m := r.machine
	var b strings.Builder
	b.WriteString("# Benchmarks\n\n")
	b.WriteString("Written by `go run ./tests/cmd/bench -bin bin -write BENCHMARKS.md` (after `make build`); `make bench` runs the same measurements and only prints them.\n\n")
	fmt.Fprintf(&b, "- command: `%s`\n", commandLine())
	fmt.Fprintf(&b, "- date: %s; the whole run took %s\n", m.date.Format("2006-01-02 15:04 MST"), r.elapsed.Round(time.Second))
	fmt.Fprintf(&b, "- machine: %d cores (`nproc`), %s, %s; shared with other jobs, so noisy: read medians and the ratios to baselines measured in the same run, not absolute tails\n", m.cores, m.model, m.kernel)
	fmt.Fprintf(&b, "- Go: %s; PostgreSQL: %s (throwaway cluster on 127.0.0.1, started by the benchmark)\n", m.goVersion, m.pgVersion)
	pgConf := "pgtest's defaults (`fsync=off`, `full_page_writes=off`, `shared_buffers=64MB`)"
	if len(r.cfg.pgSettings) > 0 {
		var kv []string
		for k, v := range r.cfg.pgSettings {
			kv = append(kv, "`"+k+"="+v+"`")
		}
		slices.Sort(kv)
		pgConf += " overridden by " + strings.Join(kv, ", ")
	}
	fmt.Fprintf(&b, "- PostgreSQL settings: %s\n", pgConf)
	if r.versions != "" {
		fmt.Fprintf(&b, "- binaries under test: %s (`make build`; `-dirty` means uncommitted changes in the work tree)\n", r.versions)
	}
	if r.cfg.shapes() {
		fmt.Fprintf(&b, "- worker: default settings; storage in a fresh folder on %s; one broker and one worker on stream `default`, every process on loopback\n", r.storageFS)
	}
	var secs []string
	if r.handoff != nil {
		secs = append(secs, r.handoff.markdown())
	}
	if r.kubelet != nil {
		secs = append(secs, r.kubelet.markdown())
	}
	if r.repl != nil {
		secs = append(secs, r.repl.markdown())
	}
	if r.live != nil {
		secs = append(secs, r.live.markdown())
	}
	if r.sync != nil {
		secs = append(secs, r.sync.markdown())
	}
	if r.many != nil {
		secs = append(secs, r.many.markdown())
	}
	old, _ := os.ReadFile(r.cfg.write)
	if kept := keptSections(string(old), secs); len(kept) > 0 {
		var titles []string
		for _, k := range kept {
			title, _, _ := strings.Cut(strings.TrimPrefix(k, "## "), "\n")
			titles = append(titles, title)
		}
		fmt.Fprintf(&b, "- sections not run this time, kept as the previous report had them (their own run's command, date and binaries are not these): %s\n", strings.Join(titles, ", "))
		secs = append(kept, secs...)
	}
	b.WriteString("\n" + strings.Join(secs, "\n"))
	if old != nil {
		if i := strings.Index(string(old), notesMarker); i >= 0 {
			b.WriteString("\n" + string(old[i:]))
			return b.String()
		}
	}
	b.WriteString("\n" + notesMarker + "\n")
	return b.String()
}

// keptSections returns the sections ("## Title" up to the next one or the
// notes) of an earlier report whose titles are not among secs.
func keptSections(old string, secs []string) []string {
	if i := strings.Index(old, notesMarker); i >= 0 {
		old = old[:i]
	}
	have := map[string]bool{}
	for _, s := range secs {
		have[firstLine(s)] = true
	}
	var out []string
	parts := strings.Split(old, "\n## ")
	for _, p := range parts[1:] {
		s := "## " + strings.TrimRight(p, "\n") + "\n"
		if !have[firstLine(s)] {
			out = append(out, s)
		}
	}
	return out
}

// binaryVersions asks each binary of dir for its version.
func binaryVersions(dir string) string {
	var out []string
	for _, name := range []string{"broker", "worker"} {
		p, err := binaryPath(dir, name)
		if err != nil {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		b, err := exec.CommandContext(ctx, p, "version").Output()
		cancel()
		if err == nil {
			out = append(out, "`"+strings.TrimSpace(string(b))+"`")
		}
	}
	return strings.Join(out, ", ")
}

// describeFS says what kind of file system dir is on.
func describeFS(dir string) string {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return "an unknown file system"
	}
	if st.Type == 0x01021994 { // TMPFS_MAGIC
		return "tmpfs (memory: its fsyncs cost nothing, unlike on a disk)"
	}
	return "the machine's disk (`" + dir + "`, not tmpfs: the worker's fsyncs are real)"
}

// commandLine is how this program was run, as `go run`.
func commandLine() string {
	return strings.Join(append([]string{"go run ./tests/cmd/bench"}, os.Args[1:]...), " ")
}

func secs(d time.Duration) string { return fmt.Sprintf("%.2f", d.Seconds()) }

func median(ds []time.Duration) time.Duration { return summarize(ds).p50 }

// thousands formats n with thin separators: 48,780.
func thousands(n float64) string {
	s := fmt.Sprintf("%.0f", n)
	var out []byte
	for i := range len(s) {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	return string(out)
}

// --- Replication throughput ---

func (r *replResults) medians(k int) (recv, baton time.Duration) {
	var rs, bs []time.Duration
	for _, x := range r.bySize(k) {
		rs = append(rs, x.recvWall)
		bs = append(bs, x.batonWall)
	}
	return median(rs), median(bs)
}

func (r *replResults) ratio(k int) float64 {
	recv, baton := r.medians(k)
	return float64(recv) / float64(baton)
}

// catchUp is the median time from the worker's "replicating" to the last
// change read: Baton without its start-up (lease, storage, slot).
func (r *replResults) catchUp(k int) time.Duration {
	var ds []time.Duration
	for _, x := range r.bySize(k) {
		ds = append(ds, x.batonWall-x.batonStreaming)
	}
	return median(ds)
}

func (r *replResults) table(md bool) string {
	cells := [][]string{{"workload", "rounds", "pg_recvlogical s", "changes/s", "Baton s", "changes/s", "Baton / pg_recvlogical",
		"Baton without start-up s", "changes/s"}}
	for _, k := range r.txSizes {
		recv, baton := r.medians(k)
		c := r.catchUp(k)
		cells = append(cells, []string{
			fmt.Sprintf("%s inserts, %s", thousands(float64(r.changes)), rowsPerTx(k)),
			fmt.Sprint(len(r.bySize(k))),
			secs(recv), thousands(float64(r.changes) / recv.Seconds()),
			secs(baton), thousands(float64(r.changes) / baton.Seconds()),
			fmt.Sprintf("%.2f×", r.ratio(k)),
			secs(c), thousands(float64(r.changes) / c.Seconds()),
		})
	}
	return renderTable(cells, md)
}

func rowsPerTx(k int) string {
	if k == 1 {
		return "1 row per transaction"
	}
	return fmt.Sprintf("%d rows per transaction", k)
}

// goalThroughputRatio is the goal for transactions of k rows.
func goalThroughputRatio(k int) float64 {
	if k == 1 {
		return goalThroughputRatio1
	}
	return goalThroughputRatioBig
}

func (r *replResults) goalLine() string {
	var parts []string
	for _, k := range r.txSizes {
		verdict := "met"
		if r.ratio(k) < goalThroughputRatio(k) {
			verdict = "not met"
		}
		parts = append(parts, fmt.Sprintf("%s: at least %.1f×, %s (%.2f×)", rowsPerTx(k), goalThroughputRatio(k), verdict, r.ratio(k)))
	}
	return fmt.Sprintf("goal: Baton's changes/s, start-up included, against pg_recvlogical's — %s", strings.Join(parts, "; "))
}

func (r *replResults) details() []string {
	var out []string
	for _, k := range r.txSizes {
		var stream, rest, wcpu, wpg, rcpu, rpg []time.Duration
		resp := 0
		for _, x := range r.bySize(k) {
			stream = append(stream, x.batonStreaming)
			rest = append(rest, x.batonWall-x.batonStreaming)
			wcpu = append(wcpu, x.batonCPU)
			wpg = append(wpg, x.batonPGCPU)
			rcpu = append(rcpu, x.recvCPU)
			rpg = append(rpg, x.recvPGCPU)
			resp += x.responses
		}
		n := len(r.bySize(k))
		out = append(out, fmt.Sprintf("%s (medians of %d rounds): Baton = worker start → replicating (lease, slot, START_REPLICATION) %s s + → last change read %s s, "+
			"%d shape responses per round; CPU: worker %s s, PostgreSQL %s s; pg_recvlogical: its CPU %s s, PostgreSQL %s s",
			rowsPerTx(k), n, secs(median(stream)), secs(median(rest)), resp/max(n, 1), secs(median(wcpu)), secs(median(wpg)), secs(median(rcpu)), secs(median(rpg))))
		bc, rc := median(wcpu)+median(wpg), median(rcpu)+median(rpg)
		out = append(out, fmt.Sprintf("%s, CPU instead of wall time (less sensitive to other jobs on the machine): Baton %s s (%.0f µs per change) vs pg_recvlogical %s s (%.0f µs per change): %.2f×",
			rowsPerTx(k), secs(bc), float64(bc.Microseconds())/float64(r.changes), secs(rc), float64(rc.Microseconds())/float64(r.changes), float64(rc)/float64(bc)))
	}
	if n := r.unreleased[orphanedRegrant] + r.unreleased[lostRelease]; n > 0 {
		how := "the benchmark waited for each such grant to expire before starting the next worker, so the times above do not include that wait"
		if !r.waitOrphans {
			how = "these waits are included in the times above (-wait-orphaned-grant=false)"
		}
		out = append(out, fmt.Sprintf("known problem: %d of %d graceful worker restarts (warm-up included) left a grant the broker had to let expire "+
			"(TTL + 10%%, about 6.6 s) before granting the next worker — %ss: %d (the broker granted a new epoch to the stopping worker right after its release; "+
			"the process exited without using or releasing it), %ss: %d (the worker sent Released, but the broker saw its stream end first); %s; see the notes below",
			n, r.restarts, orphanedRegrant, r.unreleased[orphanedRegrant], lostRelease, r.unreleased[lostRelease], how))
	} else {
		out = append(out, fmt.Sprintf("every one of %d graceful worker restarts (warm-up included) was released cleanly: no grant had to expire", r.restarts))
	}
	return out
}

func (r *replResults) markdown() string {
	var b strings.Builder
	b.WriteString("## Replication throughput\n\n")
	b.WriteString(r.table(true))
	b.WriteString("\n**" + r.goalLine() + "**\n\n")
	for _, d := range r.details() {
		b.WriteString("- " + d + "\n")
	}
	fmt.Fprintf(&b, `
What is measured, per round (one unmeasured warm-up round first; which of the
two goes first alternates between rounds):

- the worker is stopped gracefully (SIGTERM, exit 0; the broker stays), and
  %s inserts into `+"`%s`"+` (id bigint primary key, text, int,
  timestamptz) are committed in transactions of k rows, in one server-side
  loop with a COMMIT per transaction. Its table is in the publication
  `+"`%s`"+` (put there by the shape created before the first round);
- **pg_recvlogical** — `+"`pg_recvlogical --start --endpos=<pg_current_wal_lsn() after the workload> -f /dev/null -o proto_version=1 -o publication_names=%s`"+`
  on its own slot, created (`+"`--create-slot -P pgoutput`"+`) before the
  workload: process start → exit. The decode limit: PostgreSQL's walsender
  decoding the same WAL through pgoutput to a client that does nothing;
- **Baton** — a worker process started on the same storage: process start →
  a shape client, long-polling from where it was as Electric's client does
  after a reconnect (handle, offset, cursor, `+"`live=true`"+`), reads the
  response holding the round's last transaction (its offset passes the WAL
  position noted before that transaction). Shape records are served only once
  fsynced, so this is "all changes durable in the shape log, and read by a
  client". Every id must have been read exactly once, or the run fails.
  "Baton without start-up" starts at the worker's `+"`replicating`"+` log
  line (lease granted, storage and shapes opened, slot checked,
  START_REPLICATION done).

CPU is from `+"`/proc`"+` (PostgreSQL: the postmaster and all its children,
including exited ones).
`, thousands(float64(r.changes)), benchTable, publication, publication)
	return b.String()
}

// --- Live latency ---

func (r *liveResults) rows() []row {
	return []row{
		{"baseline: PostgreSQL commit round trip (autocommit INSERT sent → returned)", summarize(r.commitRTT)},
		{"baseline: commit returned → raw pgoutput consumer has the commit (same WAL, own slot)", summarize(r.raw)},
		{"Baton: commit returned → waiting long-poll response with the row read", summarize(r.baton)},
		{"disk: 4 KiB append + fsync in the worker's storage folder (every 20 ms meanwhile)", summarize(r.fsync)},
	}
}

func (r *liveResults) table(md bool) string {
	cells := [][]string{{"measurement", "n", "p50 ms", "p95 ms", "p99 ms", "max ms"}}
	for _, x := range r.rows() {
		cells = append(cells, []string{x.name, fmt.Sprint(x.st.n), ms(x.st.p50), ms(x.st.p95), ms(x.st.p99), ms(x.st.max)})
	}
	return renderTable(cells, md)
}

func (r *liveResults) goalLine() string {
	p99 := summarize(r.baton).p99
	verdict := "met"
	if p99 >= goalLiveP99 {
		verdict = "not met"
	}
	return fmt.Sprintf("goal: p99 of commit → waiting long-poll client < %d ms: %s (p99 %s ms)", goalLiveP99.Milliseconds(), verdict, ms(p99))
}

func (r *liveResults) details() []string {
	b, raw := summarize(r.baton), summarize(r.raw)
	return []string{
		fmt.Sprintf("Baton's p50 above the raw pgoutput consumer's: %s ms (what the worker adds: decode, stream log append + fsync, routing, shape log append + fsync, HTTP)", ms(b.p50-raw.p50)),
		fmt.Sprintf("%d commits (+%d warm-up), %d long-poll requests; rows not delivered to a long-poll already waiting: %d; Baton responses read before the commit returned (counted as 0): %d",
			r.commits, liveWarmup, r.requests, r.notWaiting, r.early),
		fmt.Sprintf("the raw pgoutput consumer had the commit before the committing client had its reply in %d of %d commits (counted as 0): the walsender is woken when the commit is flushed, before the backend answers",
			r.rawEarly, r.commits),
	}
}

func (r *liveResults) markdown() string {
	var b strings.Builder
	b.WriteString("## Live latency\n\n")
	b.WriteString(r.table(true))
	b.WriteString("\n**" + r.goalLine() + "**\n\n")
	for _, d := range r.details() {
		b.WriteString("- " + d + "\n")
	}
	fmt.Fprintf(&b, `
What is measured: a client follows the shape of `+"`%s`"+` exactly as
Electric's client does once up to date (`+"`live=true`"+` with the handle,
offset and cursor of the previous response, a new request as soon as one
returns). The benchmark commits single-row transactions one at a time, each
once the client's next long-poll has been sent and 2–5 ms have passed (so it
waits in the worker); for each row, from the commit's return to the
committing client (pgx, prepared INSERT, one round trip) to the long-poll
response carrying that row being read in full. Baselines on the same commits:
the commit round trip itself, and a raw pgoutput consumer (in the benchmark,
its own slot, same publication, streaming at the same time as the worker):
commit returned → its Commit message arrived, the soonest any logical
replication client can know. And, for the tails: the disk under the
worker's storage, probed meanwhile with a 4 KiB append and fsync every 20 ms
(the worker fsyncs its stream log and then the shape log before a change is
served, while PostgreSQL here runs with `+"`fsync=off`"+`, so the baselines
do not pay the disk at all).
`, liveTable)
	return b.String()
}

// --- Initial sync ---

func fetchTotals(fs []syncFetch) (total, snap, wcpu, pcpu []time.Duration, req int, bytes int64) {
	for _, f := range fs {
		total = append(total, f.total)
		snap = append(snap, f.snapshot)
		wcpu = append(wcpu, f.workerCPU)
		pcpu = append(pcpu, f.pgCPU)
		req, bytes = f.requests, f.bytes
	}
	return
}

func (r *syncResults) ratio() float64 {
	shape, _, _, _, _, _ := fetchTotals(r.shape)
	return float64(median(shape)) / float64(median(r.copy))
}

func (r *syncResults) table(md bool) string {
	cells := [][]string{{"measurement", "rounds", "median s", "min s", "rows/s", "MB read", "median / COPY median"}}
	c := summarize(r.copy)
	add := func(name string, ds []time.Duration, bytes int64) {
		s := summarize(ds)
		cells = append(cells, []string{name, fmt.Sprint(s.n), secs(s.p50), secs(slices.Min(ds)),
			thousands(float64(r.rows) / s.p50.Seconds()), fmt.Sprintf("%.0f", float64(bytes)/1e6),
			fmt.Sprintf("%.2f×", float64(s.p50)/float64(c.p50))})
	}
	add(fmt.Sprintf("baseline: COPY %s TO STDOUT (text, pgx, discarded)", syncTable), r.copy, r.copyBytes)
	shape, _, _, _, req, bytes := fetchTotals(r.shape)
	add(fmt.Sprintf("Baton: new shape, offset=-1 → up-to-date (%d requests, bodies read)", req), shape, bytes)
	ex, _, _, _, req, bytes := fetchTotals(r.existing)
	add(fmt.Sprintf("Baton: the same shape again, a second client from offset=-1 (%d requests)", req), ex, bytes)
	return renderTable(cells, md)
}

func (r *syncResults) goalLine() string {
	verdict := func(ok bool) string {
		if ok {
			return "met"
		}
		return "not met"
	}
	_, snap, _, _, _, _ := fetchTotals(r.shape)
	first := median(snap)
	return fmt.Sprintf("goals: a new shape within %.1f× COPY: %s (%.2f×); its first chunk within %s: %s (%s s); worker peak RSS at most %d MiB: %s (%.0f MiB)",
		goalSyncRatio, verdict(r.ratio() <= goalSyncRatio), r.ratio(),
		goalSyncFirst, verdict(first <= goalSyncFirst), secs(first),
		goalSyncRSS>>20, verdict(r.peakRSS <= goalSyncRSS), float64(r.peakRSS)/(1<<20))
}

func (r *syncResults) details() []string {
	shape, snap, wcpu, pcpu, _, _ := fetchTotals(r.shape)
	_, _, ewcpu, _, _, _ := fetchTotals(r.existing)
	rest := make([]time.Duration, len(shape))
	for i := range shape {
		rest[i] = shape[i] - snap[i]
	}
	return []string{
		fmt.Sprintf("%s rows, table %.0f MB (pg_table_size), loaded in %s s; COPY output %.0f MB", thousands(float64(r.rows)), float64(r.tableBytes)/1e6, secs(r.load), float64(r.copyBytes)/1e6),
		fmt.Sprintf("new shape (medians): first request sent → its response headers (the first chunk, served while the snapshot is written) %s s, then the chunks %s s; CPU: worker %s s, PostgreSQL %s s (COPY: PostgreSQL %s s)",
			secs(median(snap)), secs(median(rest)), secs(median(wcpu)), secs(median(pcpu)), secs(median(r.copyPGCPU))),
		fmt.Sprintf("existing shape, second client: worker CPU %s s (median); the worker's peak resident memory after the rounds: %.0f MB (VmHWM)", secs(median(ewcpu)), float64(r.peakRSS)/1e6),
	}
}

func (r *syncResults) markdown() string {
	var b strings.Builder
	b.WriteString("## Initial sync\n\n")
	b.WriteString(r.table(true))
	b.WriteString("\n**" + r.goalLine() + "**\n\n")
	for _, d := range r.details() {
		b.WriteString("- " + d + "\n")
	}
	fmt.Fprintf(&b, `
What is measured: a table `+"`%s`"+` (id bigint primary key, text of 38
characters, int, timestamptz), loaded then `+"`VACUUM (FREEZE, ANALYZE)`"+`, read
once unmeasured. Each round: `+"`COPY %s TO STDOUT`"+` through pgx
(`+"`PgConn().CopyTo`"+` into a discarding writer); then a new client asks for
a new shape of the table (`+"`offset=-1`"+`, no handle; the worker starts the
snapshot in that request and serves each chunk as its records are durable)
and follows every chunk (handle and offset of the previous response) until
a response says up to date, reading every body in full: first request sent
→ last body read. A second client then reads the
existing shape the same way (what every later client pays), and the shape is
deleted (`+"`DELETE /v1/shape`"+`) so that the next round creates it anew.
Every insert message is counted; the run fails unless there is one per row.
`, syncTable, syncTable)
	return b.String()
}

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/batonhq/baton/tests/harness"
)

// pollEvery is how often the workers' /v1/health is read to tell which
// pair is active.
const pollEvery = 50 * time.Millisecond

// supervisor runs the pairs until a signal or a process's exit.
type supervisor struct {
	bin, url string
	pairs    []*pair
	out, log io.Writer

	active int // number of the active pair, 0 when none
	// inactiveSince is when the last active worker stopped saying so.
	inactiveSince time.Time
}

// exited reports the exit of proc, one of pair p's processes.
type exited struct {
	p    *pair
	proc *harness.Process
}

// run starts every pair and supervises them. With one pair, a process
// that exits stops the other and run returns an error naming it. With
// several, a process that exits with code 0 (someone sent it SIGTERM to
// try a handoff) stops the rest of its pair in the kubelet's order and the
// pair starts again as a standby, as in a rolling deploy; any other exit
// stops everything. ctx done (a signal) stops every pair, standbys first,
// and run returns nil.
func (s *supervisor) run(ctx context.Context) error {
	quit := make(chan struct{})
	defer close(quit)
	exits := make(chan exited)
	watch := func(p *pair) {
		for _, proc := range []*harness.Process{p.broker(), p.worker()} {
			go func() {
				<-proc.Done()
				select {
				case exits <- exited{p, proc}:
				case <-quit:
				}
			}()
		}
	}
	for _, p := range s.pairs {
		if err := p.start(s.bin, s.url); err != nil {
			s.stopAll()
			return err
		}
		fmt.Fprint(s.out, p.describe())
		watch(p)
	}
	if len(s.pairs) > 1 {
		fmt.Fprintln(s.out, "devrun: one pair will be active (its worker's /v1/health says active); to try a handoff, SIGTERM the active worker (the command is printed below)")
	}
	fmt.Fprintln(s.out, "devrun: Ctrl-C stops everything (each worker first, then its broker).")

	actives := make(chan int)
	go s.poll(quit, actives)
	for {
		select {
		case <-ctx.Done():
			fmt.Fprintln(s.out, "devrun: stopping (worker first, then broker)")
			problems := s.stopAll()
			for _, m := range problems {
				fmt.Fprintln(s.log, "devrun:", m)
			}
			fmt.Fprintln(s.out, "devrun: stopped")
			return nil
		case n := <-actives:
			s.announce(n)
		case e := <-exits:
			if e.proc != e.p.broker() && e.proc != e.p.worker() {
				continue // a process of an earlier start of the pair
			}
			if err := s.handleExit(e, watch); err != nil {
				return err
			}
		}
	}
}

// handleExit deals with the exit of one of a pair's processes.
func (s *supervisor) handleExit(e exited, watch func(*pair)) error {
	status := e.proc.ExitStatus()
	other := e.p.broker()
	if e.proc == other {
		other = e.p.worker()
	}
	if len(s.pairs) == 1 || status != "exit code 0" {
		problems := s.stopAll()
		msg := fmt.Sprintf("%s exited (%s), so devrun stopped %s. The last lines of %s:\n%s",
			e.proc.Name, status, strings.Join(s.names(e.proc), " and "), e.proc.Name, lastLines(e.proc, 8))
		for _, m := range problems {
			msg += "\n" + m
		}
		return errors.New(msg)
	}
	fmt.Fprintf(s.out, "devrun: %s exited (%s); stopping %s, then starting %s again as a standby, as a rolling deploy would\n",
		e.proc.Name, status, other.Name, e.p.title())
	for _, m := range e.p.stop() {
		fmt.Fprintln(s.log, "devrun:", m)
	}
	if err := e.p.start(s.bin, s.url); err != nil {
		s.stopAll()
		return err
	}
	fmt.Fprint(s.out, e.p.describe())
	watch(e.p)
	return nil
}

// names are the names of every process but proc.
func (s *supervisor) names(proc *harness.Process) []string {
	var out []string
	for _, p := range s.pairs {
		for _, q := range []*harness.Process{p.worker(), p.broker()} {
			if q != nil && q != proc {
				out = append(out, q.Name)
			}
		}
	}
	return out
}

// announce prints a change of the active pair.
func (s *supervisor) announce(n int) {
	prev := s.active
	s.active = n
	if n == 0 {
		if prev != 0 {
			s.inactiveSince = time.Now()
			fmt.Fprintln(s.out, "devrun: no worker is active")
		}
		return
	}
	p := s.pairs[n-1]
	if len(s.pairs) == 1 {
		fmt.Fprintf(s.out, "devrun: worker active: curl 'http://%s/v1/shape?table=<a table>&offset=-1'\n", harness.LocalAddr(p.httpAddr))
		return
	}
	took := ""
	if !s.inactiveSince.IsZero() {
		took = fmt.Sprintf(" (none was for %s, to within %s)", time.Since(s.inactiveSince).Round(time.Millisecond), pollEvery)
		s.inactiveSince = time.Time{}
	}
	fmt.Fprintf(s.out, "devrun: pair %d is active%s: curl 'http://%s/v1/shape?table=<a table>&offset=-1'\n", n, took, harness.LocalAddr(p.httpAddr))
	fmt.Fprintf(s.out, "devrun: try a handoff: kill -TERM %d   (pair %d's worker; its broker follows, as the kubelet does)\n", p.worker().PID(), n)
}

// stopAll stops every pair in the kubelet's order, standbys first so that
// the active pair does not hand off to a pair about to stop.
func (s *supervisor) stopAll() []string {
	order := slices.Clone(s.pairs)
	slices.SortStableFunc(order, func(a, b *pair) int {
		if a.n == s.active {
			return 1
		}
		if b.n == s.active {
			return -1
		}
		return 0
	})
	var problems []string
	for _, p := range order {
		problems = append(problems, p.stop()...)
	}
	return problems
}

// poll reads every worker's /v1/health and sends the number of the active
// pair (0 for none) whenever it changes, until quit is closed.
func (s *supervisor) poll(quit <-chan struct{}, actives chan<- int) {
	bases := make([]string, len(s.pairs))
	for i, p := range s.pairs {
		bases[i] = "http://" + harness.LocalAddr(p.httpAddr)
	}
	last := 0
	t := time.NewTicker(pollEvery)
	defer t.Stop()
	for {
		select {
		case <-quit:
			return
		case <-t.C:
		}
		active := 0
		for i, base := range bases {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			status, _, _ := harness.Health(ctx, base)
			cancel()
			if strings.ToLower(status) == "active" {
				active = i + 1
				break
			}
		}
		if active == last {
			continue
		}
		last = active
		select {
		case actives <- active:
		case <-quit:
			return
		}
	}
}

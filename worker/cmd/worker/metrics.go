package main

import (
	"runtime"
	"runtime/debug"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/batonhq/baton/worker/internal/shapes"
)

// slotReadTimeout bounds the read of the stream's slot at each scrape of
// /metrics (replication.SlotSampler).
const slotReadTimeout = 2 * time.Second

// buildInfo is baton_build_info: 1, labelled with the program, its version
// (set at build time), the Go version and the VCS revision the binary was
// built from ("unknown" when not recorded). The broker exports the same.
func buildInfo(version string) prometheus.Collector {
	revision := "unknown"
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				revision = s.Value
			}
		}
	}
	g := prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "baton", Name: "build_info",
		Help:        "1, labelled with the program (broker or worker), its version, the Go version and the VCS revision it was built from.",
		ConstLabels: prometheus.Labels{"program": "worker", "version": version, "goversion": runtime.Version(), "revision": revision}})
	g.Set(1)
	return g
}

// shapeStates is baton_worker_shapes{state}: the shapes of the registry
// served under the current lease, counted at each scrape (none without a
// lease). Safe for concurrent use.
type shapeStates struct {
	desc *prometheus.Desc
	mu   sync.Mutex
	reg  *shapes.Registry
}

func newShapeStates(stream string) *shapeStates {
	return &shapeStates{desc: prometheus.NewDesc("baton_worker_shapes",
		"Shapes of the registry this worker serves under its lease, by state: creating (snapshot being taken), in_use (a request holds it, a live one included), idle; 0 without a lease.",
		[]string{"state"}, prometheus.Labels{"stream": stream})}
}

// set makes reg the registry counted (nil: none).
func (s *shapeStates) set(reg *shapes.Registry) {
	s.mu.Lock()
	s.reg = reg
	s.mu.Unlock()
}

func (s *shapeStates) Describe(ch chan<- *prometheus.Desc) { ch <- s.desc }

func (s *shapeStates) Collect(ch chan<- prometheus.Metric) {
	s.mu.Lock()
	reg := s.reg
	s.mu.Unlock()
	var n map[string]int
	if reg != nil {
		n = reg.Count()
	}
	for _, st := range shapes.States {
		ch <- prometheus.MustNewConstMetric(s.desc, prometheus.GaugeValue, float64(n[st]), st)
	}
}

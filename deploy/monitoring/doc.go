// Package monitoring holds no code: its test checks the Prometheus alert
// rules (alerts.yaml) with the library promtool uses (rulefmt: the file's
// structure, every expression, every template), the Grafana dashboard
// (dashboard.json: every query parses as PromQL), and that both name only
// metrics the README lists. Which of those metrics the binaries really
// export is checked by tests/e2e TestMetricsMove, which scrapes them.
//
// It is a module of its own, outside go.work, so that Prometheus's
// libraries and their versions stay out of the binaries' builds: `make
// test` runs it with GOWORK=off.
package monitoring

package main

import (
	"encoding/json"
	"io"

	"github.com/batonhq/baton/broker/internal/config"
)

// runConfig is `broker config`: it parses and validates the environment and
// flags exactly as the broker does at start and prints the resulting
// settings as one JSON object keyed by environment variable (durations in Go
// syntax, DATABASE_URL left out), without connecting anywhere. An invalid
// configuration returns the *config.Error (exit code 2). Manifest checks use
// it to prove the settings a Deployment gives the broker are accepted.
func runConfig(args []string, getenv func(string) string, stdout io.Writer) error {
	cfg, err := config.Parse(args, getenv, help(stdout, "broker config"))
	if err != nil {
		return err
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(map[string]string{
		"REPLICATION_STREAM_ID":        cfg.StreamID,
		"BATON_BROKER_LISTEN":          cfg.Listen,
		"BATON_METRICS_LISTEN":         cfg.MetricsListen,
		"BATON_LOCK_SESSION_TIMEOUT":   cfg.LockSessionTimeout.String(),
		"BATON_HEARTBEAT_INTERVAL":     cfg.HeartbeatInterval.String(),
		"BATON_LEASE_TTL":              cfg.LeaseTTL.String(),
		"BATON_WORKER_ABSENCE_TIMEOUT": cfg.WorkerAbsenceTimeout.String(),
		"BATON_DRAIN_TIMEOUT":          cfg.DrainTimeout.String(),
		"BATON_LOG_FORMAT":             cfg.LogFormat,
	})
}

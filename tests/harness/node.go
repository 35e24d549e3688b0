package harness

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// NodeWorkerDir is the Node worker's folder, relative to the repository root.
const NodeWorkerDir = "workers/node"

// RepoRoot finds the repository root (the folder of go.work) from the
// working directory up.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("repository root (go.work) not found above the working directory")
		}
		dir = parent
	}
}

// BuildNodeWorker compiles the Node worker (workers/node, TypeScript) into
// a folder of its own under workers/node/.build (its modules are found in
// workers/node/node_modules from there), and writes into binDir an
// executable that runs it: exec node <that folder>/main.js. It returns the
// executable and a cleanup that removes the compiled folder. The worker's
// modules must be installed (`cd workers/node && npm ci`); the error says
// so when they are not.
func BuildNodeWorker(ctx context.Context, binDir string) (string, func(), error) {
	root, err := RepoRoot()
	if err != nil {
		return "", nil, err
	}
	dir := filepath.Join(root, NodeWorkerDir)
	tsc := filepath.Join(dir, "node_modules", "typescript", "bin", "tsc")
	if _, err := os.Stat(tsc); err != nil {
		return "", nil, fmt.Errorf("the Node worker's modules are missing: run 'cd %s && npm ci' (%w)", dir, err)
	}
	if err := os.MkdirAll(filepath.Join(dir, ".build"), 0o755); err != nil {
		return "", nil, err
	}
	out, err := os.MkdirTemp(filepath.Join(dir, ".build"), "test-")
	if err != nil {
		return "", nil, err
	}
	cleanup := func() { os.RemoveAll(out) }
	cmd := exec.CommandContext(ctx, "node", tsc, "-p", filepath.Join(dir, "tsconfig.json"), "--outDir", out)
	if b, err := cmd.CombinedOutput(); err != nil {
		cleanup()
		return "", nil, fmt.Errorf("build the Node worker (tsc): %w\n%s", err, b)
	}
	bin := filepath.Join(binDir, "node-worker")
	script := fmt.Sprintf("#!/bin/sh\nexec node %q \"$@\"\n", filepath.Join(out, "main.js"))
	if err := os.WriteFile(bin, []byte(script), 0o755); err != nil {
		cleanup()
		return "", nil, err
	}
	return bin, cleanup, nil
}

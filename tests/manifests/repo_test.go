package manifests

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
)

// dockerUser returns the numeric user of a Dockerfile's last USER line.
func dockerUser(path string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	user := ""
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 2 && strings.EqualFold(f[0], "USER") {
			user = f[1]
		}
	}
	if user == "" {
		return 0, fmt.Errorf("%s: no USER: the image would run as root", path)
	}
	uid, gid, _ := strings.Cut(user, ":")
	n, err := strconv.ParseInt(uid, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s: USER %s is not numeric: the kubelet cannot verify runAsNonRoot", path, user)
	}
	if n == 0 {
		return 0, fmt.Errorf("%s: USER %s is root", path, user)
	}
	if gid != "" {
		if g, err := strconv.ParseInt(gid, 10, 64); err != nil || g == 0 {
			return 0, fmt.Errorf("%s: USER %s: the group must be numeric and not root", path, user)
		}
	}
	return n, nil
}

// checkImages: both Dockerfiles run as the same numeric non-root user, and
// the build context has a .dockerignore that keeps out at least .git.
func checkImages(root string) (int64, []error) {
	var errs []error
	var users []int64
	for _, f := range []string{"deploy/broker.Dockerfile", "deploy/worker.Dockerfile"} {
		u, err := dockerUser(filepath.Join(root, f))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		users = append(users, u)
	}
	if len(users) == 2 && users[0] != users[1] {
		errs = append(errs, fmt.Errorf("the broker image runs as %d, the worker image as %d: the pod has one runAsUser", users[0], users[1]))
	}
	b, err := os.ReadFile(filepath.Join(root, ".dockerignore"))
	if err != nil {
		errs = append(errs, fmt.Errorf("the build context has no .dockerignore: %w", err))
	} else {
		for _, want := range []string{".git", "bin", "tests"} {
			if !regexp.MustCompile(`(?m)^/?` + regexp.QuoteMeta(want) + `/?$`).Match(b) {
				errs = append(errs, fmt.Errorf(".dockerignore does not exclude %s", want))
			}
		}
	}
	if len(users) == 0 {
		return 0, errs
	}
	return users[0], errs
}

// makefileImageTag returns the default of IMAGE_TAG in the Makefile and
// checks that `make images` tags both images with it.
func makefileImageTag(root string) (string, error) {
	b, err := os.ReadFile(filepath.Join(root, "Makefile"))
	if err != nil {
		return "", err
	}
	m := regexp.MustCompile(`(?m)^IMAGE_TAG \?= *(\S+)$`).FindSubmatch(b)
	if m == nil {
		return "", fmt.Errorf("Makefile: no `IMAGE_TAG ?= ...`")
	}
	for _, img := range []string{"baton-broker", "baton-worker"} {
		if !bytes.Contains(b, []byte("-t "+img+":$(IMAGE_TAG)")) {
			return "", fmt.Errorf("Makefile: `make images` does not tag %s:$(IMAGE_TAG)", img)
		}
	}
	return string(m[1]), nil
}

// execBrokerConfig returns a BrokerConfig that runs `broker config` of the
// binary at path with exactly the given environment.
func execBrokerConfig(path string) BrokerConfig {
	return func(env map[string]string) (Settings, error) {
		cmd := exec.Command(path, "config")
		for k, v := range env {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			return nil, fmt.Errorf("broker config: %w: %s", err, strings.TrimSpace(stderr.String()))
		}
		var s Settings
		if err := json.Unmarshal(stdout.Bytes(), &s); err != nil {
			return nil, fmt.Errorf("broker config: %w", err)
		}
		return s, nil
	}
}

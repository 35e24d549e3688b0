package k8s_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/batonhq/baton/tests/k8s"
)

func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := k8s.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	return root
}

func TestRenderBase(t *testing.T) {
	objs, err := k8s.Render(filepath.Join(repoRoot(t), k8s.Base))
	if err != nil {
		t.Fatal(err)
	}
	d := objs.Deployment("baton")
	if d == nil {
		t.Fatalf("no Deployment baton in\n%s", objs.YAML)
	}
	for _, name := range []string{"broker", "worker"} {
		if k8s.Container(&d.Spec.Template.Spec, name) == nil {
			t.Errorf("Deployment baton has no container %q", name)
		}
	}
	if objs.Service("baton") == nil {
		t.Errorf("no Service baton")
	}
	if got := len(objs.All); got != len(objs.Deployments)+len(objs.Services)+len(objs.PodDisruptionBudgets)+
		len(objs.NetworkPolicies)+len(objs.PersistentVolumeClaims)+len(objs.Secrets) {
		t.Errorf("All has %d objects, the typed lists fewer", got)
	}
}

func TestDecodeIsStrict(t *testing.T) {
	for _, tc := range []struct {
		name, yaml, want string
	}{
		{"unknown field", "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {selectr: {a: b}}\n", `unknown field "spec.selectr"`},
		{"duplicate field", "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nmetadata: {name: b}\n", `"metadata" already set`},
		{"unexpected kind", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n", "not expected"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := k8s.Decode([]byte(tc.yaml))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Decode: got error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestRenderRefusesRemoteResources(t *testing.T) {
	dir := t.TempDir()
	k := "resources:\n  - https://github.com/example/repo//deploy?ref=v1\n"
	if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(k), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := k8s.Render(dir); err == nil || !strings.Contains(err.Error(), "remote resource") {
		t.Fatalf("Render: got error %v, want a refused remote resource", err)
	}
}

// Package manifests holds the checks of Baton's deployment files (deploy/):
// every kustomization renders, decodes strictly, passes the API server's own
// validation (k8s.io/kubernetes) and the restricted Pod Security level, and
// agrees with the broker's settings, the Dockerfiles and the Makefile. A
// broken copy of the manifests must fail them (TestBrokenManifestsFail).
//
// The package has only tests: k8s.io/kubernetes is large, and it is compiled
// for `go test` of this one package and nothing else.
package manifests

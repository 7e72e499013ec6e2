// Package chart holds the tests of the Helm chart in deploy/helm/mcpid: it
// is rendered with Helm's own Go library (what `helm template` runs) and
// every object is decoded strictly into the official Kubernetes Go types,
// since schema downloads (kubeconform) are impossible in CI here.
package chart

// Package compose holds the test of the local-cluster compose file.
package compose

import (
	"os"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

type composeFile struct {
	Services map[string]struct {
		Image       string            `json:"image"`
		User        string            `json:"user"`
		Environment map[string]string `json:"environment"`
	} `json:"services"`
}

// TestComposeCluster: 3 etcd members, two replicas of each service running
// as the image's non-root user, peers wired as the architecture calls them,
// an OpenTelemetry collector every service exports to.
func TestComposeCluster(t *testing.T) {
	raw, err := os.ReadFile("compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var f composeFile
	if err := yaml.Unmarshal(raw, &f); err != nil { // YAML anchors and merge keys resolved
		t.Fatal(err)
	}
	for _, m := range []string{"etcd-0", "etcd-1", "etcd-2", "otel-collector", "edge"} {
		if _, ok := f.Services[m]; !ok {
			t.Errorf("no %s", m)
		}
	}
	calls := map[string][]string{
		"registration": {"token", "audit"}, "token": {"registration", "policy", "audit"},
		"policy": {"token", "audit"}, "audit": {"registration", "token"},
	}
	for svc, peers := range calls {
		for _, r := range []string{"-1", "-2"} {
			s, ok := f.Services[svc+r]
			if !ok {
				t.Errorf("no replica %s%s", svc, r)
				continue
			}
			if s.User != "65532:65532" || s.Image != "mcpid-"+svc+":dev" {
				t.Errorf("%s%s: user %q image %q", svc, r, s.User, s.Image)
			}
			env := s.Environment
			if env["MCPID_OTLP_ENDPOINT"] != "otel-collector:4317" || strings.Count(env["MCPID_ETCD_ENDPOINTS"], "etcd-") != 3 {
				t.Errorf("%s%s: env %v", svc, r, env)
			}
			for _, p := range peers {
				if env["MCPID_"+strings.ToUpper(p)+"_ADDR"] == "" {
					t.Errorf("%s%s: no address of %s", svc, r, p)
				}
			}
		}
	}
}

package cimd_test

import (
	"errors"
	"testing"

	"github.com/mcpid/mcpid/lib/fetch"
	"github.com/mcpid/mcpid/services/registration/internal/cimd"
)

func TestCheckURL(t *testing.T) {
	for _, ok := range []string{"https://agent.example.com/client.json", "https://Agent.Example.com/a/b?v=1"} {
		if _, err := cimd.CheckURL(ok); err != nil {
			t.Errorf("CheckURL(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{
		"http://agent.example.com/c.json", "https://agent.example.com", "https://agent.example.com/",
		"https://u:p@agent.example.com/c.json", "https://agent.example.com/c.json#f", "https:///c.json",
		"https://agent.example.com/./c.json", "https://agent.example.com/a/../c.json", "HTTPS://agent.example.com/c.json",
	} {
		_, err := cimd.CheckURL(bad)
		var e *cimd.Error
		if !errors.As(err, &e) || e.Kind != cimd.KindRefused {
			t.Errorf("CheckURL(%q) = %v, want refused", bad, err)
		}
	}
	if !cimd.IsURL("https://a.example/c") || cimd.IsURL("opaque-id_123") {
		t.Fatal("IsURL")
	}
}

func TestTrustPolicy(t *testing.T) {
	r, err := cimd.New(cimd.Config{
		TrustedDomains: []string{"trusted.example", "*.corp.example"},
		AllowedDomains: []string{"*.apps.example"},
		MinCache:       1, MaxCache: 2,
		Fetch: fetch.Config{},
	})
	if err != nil {
		t.Fatal(err)
	}
	for host, want := range map[string]cimd.Trust{
		"trusted.example": cimd.Trusted, "x.corp.example": cimd.Trusted, "TRUSTED.example": cimd.Trusted,
		"a.apps.example": cimd.Allowed, "apps.example": cimd.Rejected, "evil.example": cimd.Rejected, "corp.example": cimd.Rejected,
	} {
		if got := r.Trust(host); got != want {
			t.Errorf("Trust(%s) = %v, want %v", host, got, want)
		}
	}
	if _, err := cimd.New(cimd.Config{AllowedDomains: []string{"bad domain"}, MinCache: 1, MaxCache: 2}); err == nil {
		t.Fatal("bad pattern accepted")
	}
}

package sso

import (
	"os"
	"path/filepath"
	"testing"

	tokenv1 "github.com/mcpid/mcpid/gen/go/mcpid/token/v1"
)

// TestSecretFilesSeeded: the connectors file's own path is read only for
// that connector and that issuer; a connector re-created through the API
// with another issuer (or another id) does not inherit the file.
func TestSecretFilesSeeded(t *testing.T) {
	p := filepath.Join(t.TempDir(), "corp-oidc")
	if err := os.WriteFile(p, []byte("s3cret\r\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	sf := &SecretFiles{Seeded: seededFrom([]*tokenv1.Connector{{
		ConnectorId: "corp",
		Config: &tokenv1.Connector_Oidc{Oidc: &tokenv1.OidcConnectorConfig{
			IssuerUrl: "https://login.corp.example", ClientSecretSource: &tokenv1.OidcConnectorConfig_ClientSecretFile{ClientSecretFile: p},
		}},
	}})}
	got, err := sf.Read(&Record{ID: "corp", Issuer: "https://login.corp.example", SecretFile: p})
	if err != nil || got != "s3cret" {
		t.Fatalf("seeded read = %q, %v", got, err)
	}
	for _, r := range []*Record{
		{ID: "corp", Issuer: "https://attacker.example", SecretFile: p},
		{ID: "other", Issuer: "https://login.corp.example", SecretFile: p},
		{ID: "corp", Issuer: "https://login.corp.example", SecretFile: "/dev/zero"},
	} {
		if _, err := sf.Read(r); err == nil {
			t.Errorf("Read(%+v) succeeded", r)
		}
	}
	if sf.AllowedForAPI(p) {
		t.Error("a seeded path is allowed for the API without a secrets directory")
	}
}

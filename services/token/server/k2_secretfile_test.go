package server_test

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	auditv1 "github.com/mcpid/mcpid/gen/go/mcpid/audit/v1"
	tokenv1 "github.com/mcpid/mcpid/gen/go/mcpid/token/v1"
	"github.com/mcpid/mcpid/services/token/server"
)

// TestK2ConnectorSecretFileConfined (review finding 2): the admin API cannot
// make the token service read an arbitrary file and send it to an IdP the
// admin controls. client_secret_file is accepted only inside
// connector-secrets-dir (no "..", no symlink out, regular files of at most
// 4 KiB); every refusal answers the same, naming neither the path nor
// whether it exists, and changes nothing. A file in the directory works for
// a real sign-in.
func TestK2ConnectorSecretFileConfined(t *testing.T) {
	dir := t.TempDir()
	s := startSSO(t, func(c *server.Config) { c.ConnectorSecretsDir = dir })
	ctx := context.Background()
	kekPath := s.cfg.KEKFile.Path

	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	big := filepath.Join(dir, "big")
	must(os.WriteFile(big, []byte(strings.Repeat("x", 5000)), 0o600))
	must(os.Symlink(kekPath, filepath.Join(dir, "kek-link")))
	must(os.Mkdir(filepath.Join(dir, "sub"), 0o700))
	fifo := filepath.Join(dir, "fifo")
	must(syscall.Mkfifo(fifo, 0o600))
	empty := filepath.Join(dir, "empty")
	must(os.WriteFile(empty, nil, 0o600))

	cfg := s.corp.m.Config()
	withFile := func(id, path string) *tokenv1.Connector {
		return &tokenv1.Connector{
			ConnectorId: id, DisplayName: "Vault " + id, Enabled: true,
			Config: &tokenv1.Connector_Oidc{Oidc: &tokenv1.OidcConnectorConfig{
				IssuerUrl: cfg.Issuer, ClientId: cfg.ClientID,
				ClientSecretSource: &tokenv1.OidcConnectorConfig_ClientSecretFile{ClientSecretFile: path},
				Scopes:             []string{"openid", "email", "profile", "groups"},
			}},
		}
	}
	refused := map[string]string{
		"the KEK file":              kekPath,
		"a device":                  "/dev/zero",
		"a missing file in the dir": filepath.Join(dir, "missing"),
		"a symlink out of the dir":  filepath.Join(dir, "kek-link"),
		"a .. escape":               filepath.Join(dir, "sub", "..", "..", filepath.Base(filepath.Dir(kekPath)), "kek"),
		"an oversized file":         big,
		"a FIFO":                    fifo,
		"a directory":               filepath.Join(dir, "sub"),
		"an empty file":             empty,
		"a relative path":           "kek",
		"the directory itself":      dir,
	}
	var firstMsg string
	for name, path := range refused {
		before := s.snapshot()
		_, err := s.grpcTok.CreateConnector(ctx, &tokenv1.CreateConnectorRequest{Connector: withFile("vault", path)})
		reasonIs(t, err, codes.FailedPrecondition, tokenv1.ErrorReason_ERROR_REASON_CONNECTOR_SECRET_FILE_UNREADABLE.String())
		msg := status.Convert(err).Message()
		if strings.Contains(msg, path) || strings.Contains(msg, dir) || strings.Contains(msg, "exist") {
			t.Errorf("%s: error %q reveals the path or its existence", name, msg)
		}
		if firstMsg == "" {
			firstMsg = msg
		} else if msg != firstMsg {
			t.Errorf("%s: error %q differs from %q (tells refusals apart)", name, msg, firstMsg)
		}
		if d := diff(before, s.snapshot()); len(d) > 0 {
			t.Errorf("%s: refused create wrote %v", name, d)
		}
		// The same through UpdateConnector on an existing connector.
		_, err = s.grpcTok.UpdateConnector(ctx, &tokenv1.UpdateConnectorRequest{
			Connector:  withFile("partner", path),
			UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"oidc.client_secret_file"}},
		})
		reasonIs(t, err, codes.FailedPrecondition, tokenv1.ErrorReason_ERROR_REASON_CONNECTOR_SECRET_FILE_UNREADABLE.String())
		if msg := status.Convert(err).Message(); msg != firstMsg {
			t.Errorf("%s: update error %q differs from %q", name, msg, firstMsg)
		}
	}
	got, err := s.grpcTok.GetConnector(ctx, &tokenv1.GetConnectorRequest{ConnectorId: "partner"})
	must(err)
	if got.GetConnector().GetOidc().GetClientSecretFile() != "" || !got.GetConnector().GetOidc().GetHasClientSecret() {
		t.Fatalf("partner after refused updates: %v", got.GetConnector().GetOidc())
	}

	// A file inside the directory (through a symlink that stays inside,
	// as Kubernetes mounts secrets) is accepted and used at sign-in.
	must(os.Mkdir(filepath.Join(dir, "..data"), 0o700))
	must(os.WriteFile(filepath.Join(dir, "..data", "vault"), []byte(cfg.ClientSecret+"\n"), 0o600))
	must(os.Symlink(filepath.Join("..data", "vault"), filepath.Join(dir, "vault")))
	c, err := s.grpcTok.CreateConnector(ctx, &tokenv1.CreateConnectorRequest{Connector: withFile("vault", filepath.Join(dir, "vault"))})
	must(err)
	if c.GetConnector().GetOidc().GetClientSecretFile() != filepath.Join(dir, "vault") {
		t.Fatalf("created %v", c.GetConnector().GetOidc())
	}
	tr, _ := s.signIn("connector", "vault")
	if tr.AccessToken == "" {
		t.Fatal("no token after a sign-in through the file-secret connector")
	}
	ev := s.lastLoginEvent()
	if ev.GetType() != auditv1.EventType_EVENT_TYPE_LOGIN_SUCCEEDED || ev.GetConnectorId() != "vault" || ev.GetClientId() != clientWeb {
		t.Fatalf("last login event %v", ev)
	}

	// A file in the directory that is later swapped for something else is
	// refused at sign-in (read at each use with the same rules).
	must(os.Remove(filepath.Join(dir, "vault")))
	must(os.Symlink(kekPath, filepath.Join(dir, "vault")))
	a := webAuthz("crm:read")
	b := s.browser()
	r := s.upstream(b, s.start(b, a, "connector", "vault"))
	if r.code < http.StatusBadRequest {
		t.Fatalf("sign-in with a secret file pointing out of the directory answered %d", r.code)
	}
	// The failure is audited with the pending request's client.
	if ev := s.lastLoginEvent(); ev.GetType() == auditv1.EventType_EVENT_TYPE_LOGIN_FAILED && ev.GetClientId() != clientWeb {
		t.Fatalf("failed login event without the client: %v", ev)
	}
}

package devca

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"errors"
	"math/big"
	"net/url"
	"strings"
	"testing"
	"time"
)

func TestParseIDRoundTrip(t *testing.T) {
	cases := []struct {
		uri  string
		want Identity
	}{
		{"spiffe://mcpid/service/registration", Identity{Kind: KindService, Name: "registration"}},
		{"spiffe://mcpid/service/token", Identity{Kind: KindService, Name: "token"}},
		{"spiffe://mcpid/service/policy", Identity{Kind: KindService, Name: "policy"}},
		{"spiffe://mcpid/service/audit", Identity{Kind: KindService, Name: "audit"}},
		{"spiffe://mcpid/operator/admin/alice", Identity{Kind: KindOperator, Name: "alice", Role: RoleAdmin}},
		{"spiffe://mcpid/operator/auditor/bob.smith-2_x", Identity{Kind: KindOperator, Name: "bob.smith-2_x", Role: RoleAuditor}},
		{"spiffe://mcpid/mcp-server/" + b64("https://crm.example.com/mcp"), Identity{Kind: KindMCPServer, Resource: "https://crm.example.com/mcp"}},
		{"spiffe://mcpid/mcp-server/" + b64("http://127.0.0.1:8080"), Identity{Kind: KindMCPServer, Resource: "http://127.0.0.1:8080"}},
	}
	for _, c := range cases {
		got, err := ParseID(c.uri)
		if err != nil {
			t.Errorf("ParseID(%q): %v", c.uri, err)
			continue
		}
		if got != c.want {
			t.Errorf("ParseID(%q) = %+v, want %+v", c.uri, got, c.want)
		}
		if s := got.String(); s != c.uri {
			t.Errorf("String() = %q, want %q", s, c.uri)
		}
	}
}

func TestParseIDRejects(t *testing.T) {
	canonical := "https://crm.example.com"
	enc := b64(canonical)
	// Flip the lowest bit of the last character: with 23 input bytes that bit
	// is padding, so a lenient decoder yields the same resource and only
	// strict decoding tells the two spellings apart.
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	last := strings.IndexByte(alphabet, enc[len(enc)-1])
	sloppy := enc[:len(enc)-1] + string(alphabet[last^1])
	if dec, err := base64.RawURLEncoding.DecodeString(sloppy); err != nil || string(dec) != canonical {
		t.Fatalf("test setup: lenient decoding of %q = %q, %v", sloppy, dec, err)
	}

	bad := []string{
		"",
		"spiffe://mcpid",
		"spiffe://mcpid/",
		"spiffe://mcpid/service",
		"spiffe://mcpid/service/",
		"spiffe://mcpid/service/token/",
		"spiffe://mcpid/service/unknown",
		"spiffe://mcpid/service/Token",
		"spiffe://mcpid/Service/token",
		"SPIFFE://mcpid/service/token",
		"spiffe://MCPID/service/token",
		"spiffe://mcpid.dev/service/token",
		"spiffe://other/service/token",
		"spiffe://mcpid:443/service/token",
		"spiffe://user@mcpid/service/token",
		"spiffe:/mcpid/service/token",
		"https://mcpid/service/token",
		"urn:mcpid:admin",
		"spiffe://mcpid/service/token?x=1",
		"spiffe://mcpid/service/token#frag",
		"spiffe://mcpid/service/tok%65n",
		"spiffe://mcpid//service/token",
		"spiffe://mcpid/./service/token",
		"spiffe://mcpid/service/../service/token",
		" spiffe://mcpid/service/token",
		"spiffe://mcpid/service/token ",
		"spiffe://mcpid/operator/alice",
		"spiffe://mcpid/operator/root/alice",
		"spiffe://mcpid/operator/ADMIN/alice",
		"spiffe://mcpid/operator/admin/alice/extra",
		"spiffe://mcpid/operator/admin/al ice",
		"spiffe://mcpid/operator/admin/alice@example.com",
		"spiffe://mcpid/operator/admin/..",
		"spiffe://mcpid/operator/admin/" + strings.Repeat("a", maxNameLen+1),
		"spiffe://mcpid/mcp-server",
		"spiffe://mcpid/mcp-server/",
		"spiffe://mcpid/mcp-server/" + enc + "/x",
		"spiffe://mcpid/mcp-server/" + sloppy,
		"spiffe://mcpid/mcp-server/" + base64.URLEncoding.EncodeToString([]byte("https://crm.example.com/mc")), // padded: 26 bytes
		"spiffe://mcpid/mcp-server/" + b64("https://CRM.example.com/"),                                         // not canonical
		"spiffe://mcpid/mcp-server/" + b64("https://crm.example.com/mcp#x"),
		"spiffe://mcpid/mcp-server/" + b64("ftp://crm.example.com"),
		"spiffe://mcpid/mcp-server/" + b64("urn:mcpid:policy"),
		"spiffe://mcpid/mcp-server/" + b64(""),
		"spiffe://mcpid/mcp-server/" + strings.Repeat("A", maxIDLen),
		"spiffe://mcpid/client/abc",
	}
	for _, s := range bad {
		id, err := ParseID(s)
		if err == nil {
			t.Errorf("ParseID(%q) = %+v, want error", s, id)
			continue
		}
		if !errors.Is(err, ErrInvalidID) {
			t.Errorf("ParseID(%q) error %v is not ErrInvalidID", s, err)
		}
	}
}

func TestIdentityConstructorsValidate(t *testing.T) {
	if _, err := ServiceID("gateway"); !errors.Is(err, ErrInvalidID) {
		t.Errorf("ServiceID(gateway) error = %v, want ErrInvalidID", err)
	}
	if _, err := OperatorID("alice", "root"); !errors.Is(err, ErrInvalidID) {
		t.Errorf("OperatorID(alice, root) error = %v, want ErrInvalidID", err)
	}
	if _, err := OperatorID("alice/admin", RoleAdmin); !errors.Is(err, ErrInvalidID) {
		t.Errorf("OperatorID with slash error = %v, want ErrInvalidID", err)
	}
	if _, err := MCPServerID("https://crm.example.com/"); !errors.Is(err, ErrInvalidID) {
		t.Errorf("MCPServerID(non-canonical) error = %v, want ErrInvalidID", err)
	}
	if _, err := (Identity{}).URI(); !errors.Is(err, ErrInvalidID) {
		t.Errorf("zero Identity URI() error = %v, want ErrInvalidID", err)
	}
	bad := []Identity{
		{Kind: KindService, Name: "token", Role: RoleAdmin},
		{Kind: KindService, Name: "token", Resource: "https://a.example"},
		{Kind: KindOperator, Name: "alice", Role: RoleAdmin, Resource: "https://a.example"},
		{Kind: KindMCPServer, Name: "x", Resource: "https://a.example"},
		{Kind: KindMCPServer, Role: RoleAdmin, Resource: "https://a.example"},
	}
	for _, id := range bad {
		if err := id.Validate(); !errors.Is(err, ErrInvalidID) {
			t.Errorf("%+v.Validate() = %v, want ErrInvalidID", id, err)
		}
	}
}

func TestIdentityFromCertificate(t *testing.T) {
	good := mustURL(t, "spiffe://mcpid/service/token")
	other := mustURL(t, "spiffe://mcpid/service/audit")
	cases := []struct {
		name string
		uris []*url.URL
		ok   bool
	}{
		{"one valid URI", []*url.URL{good}, true},
		{"no URI", nil, false},
		{"two URIs", []*url.URL{good, other}, false},
		{"foreign URI", []*url.URL{mustURL(t, "spiffe://example.org/ns/default/sa/token")}, false},
	}
	for _, c := range cases {
		cert := selfSigned(t, c.uris)
		id, err := IdentityFromCertificate(cert)
		if c.ok {
			if err != nil || id != (Identity{Kind: KindService, Name: "token"}) {
				t.Errorf("%s: got %+v, %v", c.name, id, err)
			}
			continue
		}
		if !errors.Is(err, ErrInvalidID) {
			t.Errorf("%s: error = %v, want ErrInvalidID", c.name, err)
		}
	}
	if _, err := IdentityFromCertificate(nil); !errors.Is(err, ErrInvalidID) {
		t.Errorf("nil certificate: error = %v, want ErrInvalidID", err)
	}
}

// FuzzParseID checks that parsing is strict: whatever parses has exactly
// one spelling, the one it was parsed from, and is valid.
func FuzzParseID(f *testing.F) {
	for _, s := range []string{
		"spiffe://mcpid/service/token",
		"spiffe://mcpid/operator/admin/alice",
		"spiffe://mcpid/mcp-server/" + b64("https://crm.example.com/mcp"),
		"spiffe://mcpid/service/token?x",
		"spiffe://mcpid/mcp-server/" + b64("https://CRM.example.com"),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := ParseID(s)
		if err != nil {
			return
		}
		if got := id.String(); got != s {
			t.Fatalf("ParseID(%q).String() = %q", s, got)
		}
		if err := id.Validate(); err != nil {
			t.Fatalf("ParseID(%q) returned invalid %+v: %v", s, id, err)
		}
	})
}

func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

func mustURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// selfSigned makes a throwaway certificate with the given URI SANs, to test
// parsing certificates devca itself would never issue.
func selfSigned(t *testing.T, uris []*url.URL) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		URIs:         uris,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

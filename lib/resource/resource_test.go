package resource

import (
	"errors"
	"strings"
	"testing"
)

func TestCanonicalize(t *testing.T) {
	good := map[string]string{
		"https://crm.example.com":               "https://crm.example.com",
		"https://CRM.Example.COM/":              "https://crm.example.com",
		"HTTPS://crm.example.com/mcp/":          "https://crm.example.com/mcp",
		"https://crm.example.com:443/mcp":       "https://crm.example.com/mcp",
		"http://127.0.0.1:80/mcp":               "http://127.0.0.1/mcp",
		"http://localhost:8080/MCP":             "http://localhost:8080/MCP",
		"https://[::1]:8443/a/b":                "https://[::1]:8443/a/b",
		"https://[::1]/a":                       "https://[::1]/a",
		"https://crm.example.com/a%20b":         "https://crm.example.com/a%20b",
		"https://crm.example.com/tenant/x/mcp/": "https://crm.example.com/tenant/x/mcp",
	}
	for in, want := range good {
		got, err := Canonicalize(in)
		if err != nil {
			t.Errorf("Canonicalize(%q) error: %v", in, err)
			continue
		}
		if got != want {
			t.Errorf("Canonicalize(%q) = %q, want %q", in, got, want)
		}
		// Canonical forms are fixed points.
		again, err := Canonicalize(got)
		if err != nil || again != got {
			t.Errorf("Canonicalize(%q) = %q, %v; not a fixed point", got, again, err)
		}
	}
}

func TestCanonicalizeRejects(t *testing.T) {
	bad := []string{
		"",
		"crm.example.com",
		"/mcp",
		"//crm.example.com/mcp",
		"ftp://crm.example.com",
		"urn:mcpid:admin",
		"javascript:alert(1)",
		"file:///etc/passwd",
		"https://crm.example.com/mcp#frag",
		"https://crm.example.com/mcp#",
		"https://crm.example.com/mcp?x=1",
		"https://crm.example.com/mcp?",
		"https://user:pw@crm.example.com/mcp",
		"https://crm.example.com:/mcp",
		"https:///mcp",
		"https://crm.example.com/a//b",
		"https://crm.example.com/a/../b",
		"https://crm.example.com/./b",
		" https://crm.example.com",
		"https://crm.example.com/a b",
		"https://crm.example.com\\@evil.example",
		"https://" + strings.Repeat("a", 3000) + ".example",
	}
	for _, in := range bad {
		if got, err := Canonicalize(in); err == nil {
			t.Errorf("Canonicalize(%q) = %q, want error", in, got)
		} else if !errors.Is(err, ErrInvalid) {
			t.Errorf("Canonicalize(%q) error %v is not ErrInvalid", in, err)
		}
	}
}

func TestEqual(t *testing.T) {
	if !Equal("https://CRM.example.com/mcp/", "https://crm.example.com:443/mcp") {
		t.Error("equivalent URIs not equal")
	}
	if Equal("https://crm.example.com/mcp", "https://crm.example.com/MCP") {
		t.Error("paths are case-sensitive")
	}
	if Equal("https://crm.example.com", "http://crm.example.com") {
		t.Error("schemes differ")
	}
	if Equal("not a uri", "not a uri") {
		t.Error("invalid URIs must never be equal")
	}
}

func FuzzCanonicalize(f *testing.F) {
	f.Add("https://crm.example.com/mcp/")
	f.Add("http://[::1]:80/x")
	f.Fuzz(func(t *testing.T, in string) {
		c, err := Canonicalize(in)
		if err != nil {
			return
		}
		again, err := Canonicalize(c)
		if err != nil || again != c {
			t.Fatalf("Canonicalize(%q) = %q not a fixed point (%q, %v)", in, c, again, err)
		}
	})
}

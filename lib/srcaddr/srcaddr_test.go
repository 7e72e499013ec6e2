package srcaddr_test

import (
	"context"
	"net"
	"net/netip"
	"testing"

	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"

	"github.com/mcpid/mcpid/lib/server"
	"github.com/mcpid/mcpid/lib/srcaddr"
)

func mustPrefixes(t *testing.T, s ...string) srcaddr.Prefixes {
	t.Helper()
	p, err := srcaddr.ParsePrefixes(s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestParsePrefixes(t *testing.T) {
	p := mustPrefixes(t, "10.0.0.0/8", "192.0.2.7", "2001:db8::/32", " ", "::ffff:198.51.100.1")
	for _, in := range []string{"10.1.2.3", "192.0.2.7", "2001:db8::5", "198.51.100.1", "::ffff:10.9.9.9"} {
		if !p.Contains(netip.MustParseAddr(in)) {
			t.Errorf("%s not contained", in)
		}
	}
	for _, out := range []string{"11.0.0.1", "192.0.2.8", "2001:db9::1"} {
		if p.Contains(netip.MustParseAddr(out)) {
			t.Errorf("%s contained", out)
		}
	}
	if p.Contains(netip.Addr{}) {
		t.Error("invalid address contained")
	}
	for _, bad := range []string{"10.0.0.0/33", "example.com", "fe80::1%eth0", "1.2.3"} {
		if _, err := srcaddr.ParsePrefixes([]string{bad}); err == nil {
			t.Errorf("ParsePrefixes(%q) accepted", bad)
		}
	}
}

func TestWalkTrustsOnlyConfiguredProxies(t *testing.T) {
	r := srcaddr.NewResolver(mustPrefixes(t, "10.0.0.0/8", "127.0.0.1"))
	cases := []struct {
		xff  []string
		want string
	}{
		// The gateway's peer is not a proxy: it is the client, whatever the header says.
		{[]string{"203.0.113.9, 198.51.100.1"}, "198.51.100.1"},
		// A trusted proxy vouches for the entry on its left.
		{[]string{"198.51.100.1, 10.0.0.5"}, "198.51.100.1"},
		// Two trusted hops; a forged entry further left is ignored.
		{[]string{"1.1.1.1, 198.51.100.1, 10.0.0.6, 127.0.0.1"}, "198.51.100.1"},
		// Entries with ports, several values.
		{[]string{"[2001:db8::1]:443", "10.0.0.5:1234"}, "2001:db8::1"},
		// Only trusted proxies: the leftmost.
		{[]string{"10.0.0.1, 127.0.0.1"}, "10.0.0.1"},
		// Garbage vouched for by a trusted proxy: unknown.
		{[]string{"not-an-ip, 10.0.0.5"}, "invalid IP"},
		// Garbage beyond the first untrusted entry does not matter.
		{[]string{"junk, 198.51.100.2"}, "198.51.100.2"},
		{nil, "invalid IP"},
	}
	for _, c := range cases {
		if got := r.Walk(c.xff).String(); got != c.want {
			t.Errorf("Walk(%q) = %s, want %s", c.xff, got, c.want)
		}
	}
}

func TestFromContextIgnoresForwardedForFromDirectPeers(t *testing.T) {
	r := srcaddr.NewResolver(mustPrefixes(t, "0.0.0.0/0"))
	md := metadata.Pairs("x-forwarded-for", "203.0.113.5")
	direct := peer.NewContext(metadata.NewIncomingContext(context.Background(), md),
		&peer.Peer{Addr: &net.TCPAddr{IP: net.ParseIP("192.0.2.1"), Port: 5000}})
	if got := r.FromContext(direct).String(); got != "192.0.2.1" {
		t.Fatalf("direct peer = %s, want the TCP peer", got)
	}
	gw := peer.NewContext(metadata.NewIncomingContext(context.Background(), md), &peer.Peer{Addr: server.GatewayAddr{}})
	if got := r.FromContext(gw).String(); got != "203.0.113.5" {
		t.Fatalf("gateway peer = %s, want the forwarded address", got)
	}
	if r.FromContext(context.Background()).IsValid() {
		t.Fatal("no peer gave an address")
	}
}

func TestFromHTTP(t *testing.T) {
	r := srcaddr.NewResolver(mustPrefixes(t, "127.0.0.1", "10.0.0.0/8"))
	for _, c := range []struct {
		peer string
		xff  []string
		want string
	}{
		{"192.0.2.1:5000", nil, "192.0.2.1"},
		{"192.0.2.1:5000", []string{"198.51.100.1"}, "192.0.2.1"},    // untrusted peer: its XFF is ignored
		{"127.0.0.1:5000", []string{"198.51.100.1"}, "198.51.100.1"}, // trusted edge
		{"127.0.0.1:5000", []string{"203.0.113.9, 198.51.100.1, 10.1.2.3"}, "198.51.100.1"},
		{"127.0.0.1:5000", []string{"garbage"}, "invalid IP"}, // a trusted hop vouched for garbage: unknown
		{"127.0.0.1:5000", nil, "127.0.0.1"},
		{"[::ffff:192.0.2.7]:1", nil, "192.0.2.7"},
		{"not an address", nil, "invalid IP"},
	} {
		if got := r.FromHTTP(c.peer, c.xff).String(); got != c.want {
			t.Errorf("FromHTTP(%q, %q) = %q, want %q", c.peer, c.xff, got, c.want)
		}
	}
}

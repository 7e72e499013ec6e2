package ratelimit_test

import (
	"net/netip"
	"testing"
	"time"

	"github.com/mcpid/mcpid/services/registration/internal/ratelimit"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func TestPerSourceBucket(t *testing.T) {
	c := &clock{t: time.Unix(1_000_000, 0)}
	l := ratelimit.New(6, 2, c.now) // one token per 10 s
	a := netip.MustParseAddr("198.51.100.1")
	b := netip.MustParseAddr("198.51.100.2")
	for i := range 2 {
		if ok, _ := l.Allow(a); !ok {
			t.Fatalf("request %d refused within the burst", i)
		}
	}
	ok, wait := l.Allow(a)
	if ok || wait <= 0 || wait > 10*time.Second {
		t.Fatalf("third request = %v, retry after %v", ok, wait)
	}
	if ok, _ := l.Allow(b); !ok {
		t.Fatal("another source was limited")
	}
	c.t = c.t.Add(10 * time.Second)
	if ok, _ := l.Allow(a); !ok {
		t.Fatal("refill not honoured")
	}
}

func TestIPv6GroupedBySlash64(t *testing.T) {
	l := ratelimit.New(1, 1, nil)
	if ok, _ := l.Allow(netip.MustParseAddr("2001:db8:1:2::1")); !ok {
		t.Fatal("first refused")
	}
	if ok, _ := l.Allow(netip.MustParseAddr("2001:db8:1:2:ffff::9")); ok {
		t.Fatal("same /64 got a fresh bucket")
	}
	if ok, _ := l.Allow(netip.MustParseAddr("2001:db8:1:3::1")); !ok {
		t.Fatal("another /64 was limited")
	}
}

func TestNilLimiterAllows(t *testing.T) {
	l := ratelimit.New(0, 0, nil)
	if ok, _ := l.Allow(netip.Addr{}); !ok {
		t.Fatal("disabled limiter refused")
	}
}

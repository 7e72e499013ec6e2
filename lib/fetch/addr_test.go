package fetch

import (
	"errors"
	"net/http"
	"net/netip"
	"testing"
	"time"
)

func TestClassify(t *testing.T) {
	cases := map[string]addrClass{
		"8.8.8.8":                   classPublic,
		"1.1.1.1":                   classPublic,
		"2606:4700:4700::1111":      classPublic,
		"::ffff:8.8.8.8":            classPublic,
		"64:ff9b::808:808":          classPublic, // NAT64 of 8.8.8.8
		"2002:808:808::1":           classPublic, // 6to4 of 8.8.8.8
		"127.0.0.1":                 classLoopback,
		"127.255.255.254":           classLoopback,
		"::1":                       classLoopback,
		"::ffff:127.0.0.1":          classLoopback,
		"64:ff9b::7f00:1":           classLoopback,
		"2002:7f00:1::":             classLoopback,
		"10.0.0.1":                  classPrivate,
		"172.16.0.1":                classPrivate,
		"172.31.255.255":            classPrivate,
		"192.168.1.1":               classPrivate,
		"::ffff:10.0.0.1":           classPrivate,
		"64:ff9b::a00:1":            classPrivate,
		"2002:a00:1::":              classPrivate,
		"fc00::1":                   classPrivate,
		"fd12:3456::1":              classPrivate,
		"fec0::1":                   classPrivate,
		"64:ff9b:1::a00:1":          classPrivate,
		"169.254.1.1":               classLinkLocal,
		"fe80::1":                   classLinkLocal,
		"100.64.0.1":                classShared,
		"100.127.255.255":           classShared,
		"169.254.169.254":           classMetadata,
		"169.254.170.2":             classMetadata,
		"100.100.100.200":           classMetadata,
		"::ffff:169.254.169.254":    classMetadata,
		"64:ff9b::a9fe:a9fe":        classMetadata,
		"fd00:ec2::254":             classMetadata,
		"fd20:ce::254":              classMetadata,
		"0.0.0.0":                   classUnspecified,
		"::":                        classUnspecified,
		"::ffff:0.0.0.0":            classUnspecified,
		"0.1.2.3":                   classThisNetwork,
		"224.0.0.1":                 classMulticast,
		"239.255.255.250":           classMulticast,
		"ff02::1":                   classMulticast,
		"255.255.255.255":           classBroadcast,
		"240.0.0.1":                 classReserved,
		"192.0.0.192":               classReserved,
		"192.88.99.1":               classReserved,
		"::127.0.0.1":               classReserved, // IPv4-compatible, deprecated
		"100::1":                    classReserved, // discard-only
		"2001::1":                   classReserved, // Teredo
		"4000::1":                   classReserved, // outside 2000::/3
		"192.0.2.1":                 classDocumentation,
		"198.51.100.1":              classDocumentation,
		"203.0.113.1":               classDocumentation,
		"2001:db8::1":               classDocumentation,
		"3fff::1":                   classDocumentation,
		"198.18.0.1":                classBenchmark,
		"198.19.255.255":            classBenchmark,
		"2001:2::1":                 classBenchmark,
		"fe80::1%eth0":              classZoned,
		"100.63.255.255":            classPublic, // just below CGNAT
		"100.128.0.0":               classPublic, // just above CGNAT
		"172.15.255.255":            classPublic, // just below 172.16/12
		"172.32.0.0":                classPublic, // just above
		"198.17.255.255":            classPublic,
		"198.20.0.0":                classPublic,
		"223.255.255.255":           classPublic,
		"2001:4860:4860::8888":      classPublic,
		"2a00:1450:4001:800::200e":  classPublic,
		"2001:200::1":               classPublic, // just above 2001::/23
		"2002:c000:201::":           classDocumentation,
		"::ffff:100.100.100.200":    classMetadata,
		"::ffff:255.255.255.255":    classBroadcast,
		"::ffff:198.18.0.1":         classBenchmark,
		"64:ff9b::c000:200":         classDocumentation, // NAT64 of 192.0.2.0
		"64:ff9b::c000:2ff":         classDocumentation,
		"64:ff9b::ffff:ffff":        classBroadcast,
		"2002:e000:1::":             classMulticast,
		"::ffff:224.0.0.1":          classMulticast,
		"::ffff:172.16.0.1":         classPrivate,
		"64:ff9b::ac10:1":           classPrivate,
		"::ffff:192.168.0.1":        classPrivate,
		"2002:c0a8:1::":             classPrivate,
		"64:ff9b::6440:1":           classShared,
		"::ffff:100.64.0.1":         classShared,
		"::ffff:0.1.2.3":            classThisNetwork,
		"64:ff9b::":                 classUnspecified,
		"64:ff9b::102:304":          classPublic, // 1.2.3.4
		"64:ff9b::1:203":            classThisNetwork,
		"2002::":                    classUnspecified,
		"::ffff:192.0.0.8":          classReserved,
		"64:ff9b::c058:6301":        classReserved,
		"::ffff:240.0.0.1":          classReserved,
		"::ffff:203.0.113.9":        classDocumentation,
		"64:ff9b::cb00:7109":        classDocumentation,
		"2002:cb00:7109::":          classDocumentation,
		"::ffff:198.51.100.1":       classDocumentation,
		"64:ff9b::c633:6401":        classDocumentation,
		"2002:c633:6401::":          classDocumentation,
		"::ffff:127.1.2.3":          classLoopback,
		"64:ff9b::a9fe:101":         classLinkLocal,
		"2002:a9fe:101::":           classLinkLocal,
		"::ffff:169.254.1.1":        classLinkLocal,
		"2002:a9fe:a9fe::":          classMetadata,
		"64:ff9b::a9fe:aa02":        classMetadata,
		"2002:6464:64c8::":          classMetadata,
		"::ffff:169.254.170.23":     classMetadata,
		"fd00:ec2::23":              classMetadata,
		"fd00:ec2::253":             classPrivate,
		"169.254.169.253":           classLinkLocal,
		"100.100.100.201":           classShared,
		"::ffff:1.1.1.1":            classPublic,
		"64:ff9b::101:101":          classPublic,
		"2002:101:101::":            classPublic,
		"2600::":                    classPublic,
		"3ffe::1":                   classPublic, // old 6bone range, now plain 2000::/3
		"3fff:fff::1":               classDocumentation,
		"3fff:1000::1":              classPublic, // just above 3fff::/20
		"2001:db7:ffff:ffff::":      classPublic, // between 2001::/23 and 2001:db8::/32
		"2001:1ff:ffff:ffff::":      classReserved,
		"fbff:ffff:ffff:ffff::":     classReserved,
		"fe00::":                    classReserved,
		"ff00::":                    classMulticast,
		"::2":                       classReserved,
		"1::":                       classReserved,
		"1fff:ffff:ffff:ffff::":     classReserved,
		"::ffff:0:1":                classThisNetwork,
		"::ffff:a00:1":              classPrivate,
		"64:ff9b::ffff:ffff%eth0":   classZoned,
		"::ffff:169.254.169.254%x1": classZoned,
	}
	for s, want := range cases {
		if got := classify(netip.MustParseAddr(s)); got != want {
			t.Errorf("classify(%s) = %v, want %v", s, got, want)
		}
	}
}

func TestAddrPolicy(t *testing.T) {
	strict := addrPolicy{}
	private := addrPolicy{allowPrivate: true}
	metadata := addrPolicy{allowMetadata: true}
	cases := []struct {
		addr                        string
		strict, private, withMetaOK bool
	}{
		{"8.8.8.8", true, true, true},
		{"127.0.0.1", false, true, false},
		{"::1", false, true, false},
		{"10.0.0.1", false, true, false},
		{"fc00::1", false, true, false},
		{"169.254.1.1", false, true, false},
		{"100.64.0.1", false, true, false},
		// Metadata stays refused under AllowPrivate; only AllowMetadata opens it.
		{"169.254.169.254", false, false, true},
		{"fd00:ec2::254", false, false, true},
		{"::ffff:169.254.169.254", false, false, true},
		// Never dialled, whatever the configuration.
		{"0.0.0.0", false, false, false},
		{"::", false, false, false},
		{"0.1.2.3", false, false, false},
		{"224.0.0.1", false, false, false},
		{"255.255.255.255", false, false, false},
		{"192.0.2.1", false, false, false},
		{"198.18.0.1", false, false, false},
		{"240.0.0.1", false, false, false},
		{"fe80::1%eth0", false, false, false},
	}
	for _, c := range cases {
		a := netip.MustParseAddr(c.addr)
		for _, p := range []struct {
			name string
			pol  addrPolicy
			want bool
		}{{"strict", strict, c.strict}, {"AllowPrivate", private, c.private}, {"AllowMetadata", metadata, c.withMetaOK}} {
			err := p.pol.check(a)
			if (err == nil) != p.want {
				t.Errorf("%s: check(%s) = %v, want allowed=%v", p.name, c.addr, err, p.want)
			}
			if err != nil && !errors.Is(err, ErrForbiddenAddress) {
				t.Errorf("%s: check(%s) = %v, want ErrForbiddenAddress", p.name, c.addr, err)
			}
		}
	}
}

// The default dialer's connect-time hook refuses what resolve would refuse.
func TestDefaultDialerControl(t *testing.T) {
	p := addrPolicy{}
	for _, a := range []string{"127.0.0.1:443", "[::1]:443", "169.254.169.254:80", "[::ffff:10.0.0.1]:443", "localhost:443"} {
		if err := p.checkAddrPort(a); !errors.Is(err, ErrForbiddenAddress) {
			t.Errorf("checkAddrPort(%s) = %v, want ErrForbiddenAddress", a, err)
		}
	}
	if err := p.checkAddrPort("93.184.215.14:443"); err != nil {
		t.Errorf("checkAddrPort(public) = %v", err)
	}
}

func TestCheckHostname(t *testing.T) {
	good := []string{"example.com", "a-b.example.com", "xn--bcher-kva.example", "localhost", "1password.com", "x.0abc"}
	bad := []string{"", "127.1", "0x7f000001", "2130706433", "0x7f.0.0.1", "1.2.3.4.5", "a..b", ".a", "a.",
		"-a.com", "a-.com", "a_b.com", "bücher.example", "a b.com", "example.0x", "example.0xff"}
	for _, h := range good {
		if err := checkHostname(h); err != nil {
			t.Errorf("checkHostname(%q) = %v, want ok", h, err)
		}
	}
	for _, h := range bad {
		if err := checkHostname(h); !errors.Is(err, ErrInvalidURL) {
			t.Errorf("checkHostname(%q) = %v, want ErrInvalidURL", h, err)
		}
	}
}

func TestHostPattern(t *testing.T) {
	p, err := parseHostPattern("*.Example.com")
	if err != nil {
		t.Fatal(err)
	}
	for h, want := range map[string]bool{
		"a.example.com": true, "a.b.example.com": true, "example.com": false,
		"badexample.com": false, "example.com.evil.test": false,
	} {
		if p.match(h) != want {
			t.Errorf("*.example.com match(%q) = %v", h, !want)
		}
	}
	for _, s := range []string{"*", "*.com", "*.", "a.*.com", "exa mple.com", "*.127.0.0.1"} {
		if _, err := parseHostPattern(s); err == nil {
			t.Errorf("parseHostPattern(%q) accepted", s)
		}
	}
}

func TestFreshness(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	date := now.Format(http.TimeFormat)
	cases := []struct {
		name  string
		h     http.Header
		ttl   time.Duration
		store bool
	}{
		{"none", http.Header{}, 0, true},
		{"max-age", http.Header{"Cache-Control": {"public, max-age=300"}}, 300 * time.Second, true},
		{"quoted", http.Header{"Cache-Control": {`max-age="60"`}}, 60 * time.Second, true},
		{"age", http.Header{"Cache-Control": {"max-age=300"}, "Age": {"100"}}, 200 * time.Second, true},
		{"age beyond", http.Header{"Cache-Control": {"max-age=300"}, "Age": {"1000"}}, 0, true},
		{"shortest of two", http.Header{"Cache-Control": {"max-age=600", "max-age=60"}}, 60 * time.Second, true},
		{"bad max-age is stale", http.Header{"Cache-Control": {"max-age=soon"}}, 0, true},
		{"huge max-age capped", http.Header{"Cache-Control": {"max-age=99999999999999999999999"}}, (1 << 31) * time.Second, true},
		{"no-store", http.Header{"Cache-Control": {"max-age=300, no-store"}}, 0, false},
		{"no-cache", http.Header{"Cache-Control": {"No-Cache"}}, 0, false},
		{"expires", http.Header{"Date": {date}, "Expires": {now.Add(90 * time.Second).Format(http.TimeFormat)}}, 90 * time.Second, true},
		{"bad expires", http.Header{"Expires": {"0"}}, 0, true},
		{"max-age beats expires", http.Header{"Cache-Control": {"max-age=10"}, "Expires": {now.Add(time.Hour).Format(http.TimeFormat)}}, 10 * time.Second, true},
	}
	for _, c := range cases {
		ttl, store := freshness(c.h, now)
		if ttl != c.ttl || store != c.store {
			t.Errorf("%s: freshness = %v, %v; want %v, %v", c.name, ttl, store, c.ttl, c.store)
		}
	}
}

func BenchmarkCheckAddr(b *testing.B) {
	addrs := []netip.Addr{
		netip.MustParseAddr("93.184.215.14"),
		netip.MustParseAddr("2606:4700:4700::1111"),
		netip.MustParseAddr("::ffff:8.8.8.8"),
		netip.MustParseAddr("64:ff9b::808:808"),
		netip.MustParseAddr("10.0.0.1"),
		netip.MustParseAddr("169.254.169.254"),
		netip.MustParseAddr("fd00:ec2::254"),
	}
	p := addrPolicy{}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		_ = p.check(addrs[i%len(addrs)])
	}
}

func BenchmarkClassifyPublic(b *testing.B) {
	v4 := netip.MustParseAddr("93.184.215.14")
	v6 := netip.MustParseAddr("2606:4700:4700::1111")
	b.ReportAllocs()
	for b.Loop() {
		if classify(v4) != classPublic || classify(v6) != classPublic {
			b.Fatal("misclassified")
		}
	}
}

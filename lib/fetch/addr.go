package fetch

import (
	"fmt"
	"net/netip"
)

// addrClass is what kind of destination an IP address is. The fetcher decides
// per class, not per range, so that the escape hatches (AllowPrivate,
// AllowMetadata) have one meaning everywhere.
type addrClass uint8

const (
	classPublic        addrClass = iota
	classLoopback                // 127/8, ::1
	classPrivate                 // RFC 1918, fc00::/7, fec0::/10, 64:ff9b:1::/48
	classLinkLocal               // 169.254/16, fe80::/10
	classShared                  // 100.64/10 (CGNAT)
	classMetadata                // cloud instance metadata services
	classUnspecified             // 0.0.0.0, ::
	classThisNetwork             // 0/8 (connecting to it reaches the local host on Linux)
	classMulticast               // 224/4, ff00::/8
	classBroadcast               // 255.255.255.255
	classDocumentation           // TEST-NET-1/2/3, 2001:db8::/32, 3fff::/20
	classBenchmark               // 198.18/15, 2001:2::/48
	classReserved                // everything else that is not global unicast
	classZoned                   // an address with an IPv6 zone: names an interface, never a public host
)

var classNames = [...]string{
	classPublic:        "public",
	classLoopback:      "loopback",
	classPrivate:       "private",
	classLinkLocal:     "link-local",
	classShared:        "shared address space (CGNAT)",
	classMetadata:      "a cloud metadata address",
	classUnspecified:   "unspecified",
	classThisNetwork:   "in 0.0.0.0/8",
	classMulticast:     "multicast",
	classBroadcast:     "broadcast",
	classDocumentation: "a documentation address",
	classBenchmark:     "a benchmarking address",
	classReserved:      "reserved",
	classZoned:         "zoned",
}

func (c addrClass) String() string {
	if int(c) < len(classNames) {
		return classNames[c]
	}
	return fmt.Sprintf("class(%d)", uint8(c))
}

// Instance metadata services. They hand out cloud credentials to anything
// that can reach them, so they are refused even when private addresses are
// allowed.
var (
	metadataV4 = [...][4]byte{
		{169, 254, 169, 254}, // AWS, GCP, Azure, OCI, DigitalOcean, OpenStack
		{169, 254, 170, 2},   // AWS ECS task metadata and credentials
		{169, 254, 170, 23},  // AWS EKS Pod Identity agent
		{100, 100, 100, 200}, // Alibaba Cloud
	}
	metadataV6 = [...]netip.Addr{
		netip.MustParseAddr("fd00:ec2::254"), // AWS IMDS over IPv6
		netip.MustParseAddr("fd00:ec2::23"),  // AWS EKS Pod Identity agent over IPv6
		netip.MustParseAddr("fd20:ce::254"),  // GCP metadata over IPv6
	}
)

var (
	prefixNAT64      = netip.MustParsePrefix("64:ff9b::/96")   // RFC 6052: embeds an IPv4 address
	prefixNAT64Local = netip.MustParsePrefix("64:ff9b:1::/48") // RFC 8215: local-use translation
	prefix6to4       = netip.MustParsePrefix("2002::/16")      // RFC 3056: embeds an IPv4 address
	prefixIETF       = netip.MustParsePrefix("2001::/23")      // Teredo, ORCHID, benchmarking, ...
	prefixBench6     = netip.MustParsePrefix("2001:2::/48")
	prefixDoc6       = netip.MustParsePrefix("2001:db8::/32")
	prefixDoc6New    = netip.MustParsePrefix("3fff::/20") // RFC 9637
	prefixSiteLocal  = netip.MustParsePrefix("fec0::/10")
	prefixULA        = netip.MustParsePrefix("fc00::/7")
	prefixGlobal6    = netip.MustParsePrefix("2000::/3")
)

// classify returns the class of a. IPv4-mapped IPv6 addresses are classified
// as the IPv4 address they carry, and so are the NAT64 and 6to4 forms, since
// a packet to them ends up at that IPv4 address.
func classify(a netip.Addr) addrClass {
	if a.Zone() != "" {
		return classZoned
	}
	a = a.Unmap()
	if a.Is4() {
		return classify4(a.As4())
	}
	if !a.Is6() {
		return classReserved
	}
	for _, m := range metadataV6 {
		if a == m {
			return classMetadata
		}
	}
	b := a.As16()
	switch {
	case a.IsUnspecified():
		return classUnspecified
	case a.IsLoopback():
		return classLoopback
	case prefixNAT64.Contains(a):
		return classify4([4]byte{b[12], b[13], b[14], b[15]})
	case prefix6to4.Contains(a):
		return classify4([4]byte{b[2], b[3], b[4], b[5]})
	case a.IsMulticast():
		return classMulticast
	case a.IsLinkLocalUnicast():
		return classLinkLocal
	case prefixSiteLocal.Contains(a), prefixULA.Contains(a), prefixNAT64Local.Contains(a):
		return classPrivate
	case prefixDoc6.Contains(a), prefixDoc6New.Contains(a):
		return classDocumentation
	case prefixBench6.Contains(a):
		return classBenchmark
	case prefixIETF.Contains(a):
		return classReserved
	case !prefixGlobal6.Contains(a):
		// Outside 2000::/3 nothing is routable global unicast (the
		// IPv4-compatible ::/96, discard-only 100::/64, ...).
		return classReserved
	}
	return classPublic
}

// classify4 classifies an IPv4 address. A switch on the octets rather than a
// prefix list: this runs for every resolved address.
func classify4(b [4]byte) addrClass {
	for _, m := range metadataV4 {
		if b == m {
			return classMetadata
		}
	}
	switch {
	case b == [4]byte{}:
		return classUnspecified
	case b[0] == 0:
		return classThisNetwork
	case b[0] == 10:
		return classPrivate
	case b[0] == 100 && b[1]&0xc0 == 64:
		return classShared
	case b[0] == 127:
		return classLoopback
	case b[0] == 169 && b[1] == 254:
		return classLinkLocal
	case b[0] == 172 && b[1]&0xf0 == 16:
		return classPrivate
	case b[0] == 192 && b[1] == 0 && b[2] == 0:
		return classReserved // IETF protocol assignments (192.0.0.0/24)
	case b[0] == 192 && b[1] == 0 && b[2] == 2:
		return classDocumentation
	case b[0] == 192 && b[1] == 88 && b[2] == 99:
		return classReserved // deprecated 6to4 relay anycast
	case b[0] == 192 && b[1] == 168:
		return classPrivate
	case b[0] == 198 && b[1]&0xfe == 18:
		return classBenchmark
	case b[0] == 198 && b[1] == 51 && b[2] == 100:
		return classDocumentation
	case b[0] == 203 && b[1] == 0 && b[2] == 113:
		return classDocumentation
	case b == [4]byte{255, 255, 255, 255}:
		return classBroadcast
	case b[0] >= 240:
		return classReserved
	case b[0] >= 224:
		return classMulticast
	}
	return classPublic
}

// addrPolicy decides which address classes may be dialled.
type addrPolicy struct {
	allowPrivate  bool
	allowMetadata bool
}

// check returns nil if a may be dialled, or an error wrapping
// ErrForbiddenAddress that names the class.
func (p addrPolicy) check(a netip.Addr) error {
	c := classify(a)
	switch c {
	case classPublic:
		return nil
	case classLoopback, classPrivate, classLinkLocal, classShared:
		if p.allowPrivate {
			return nil
		}
	case classMetadata:
		if p.allowMetadata {
			return nil
		}
	}
	return fmt.Errorf("%w: %s is %s", ErrForbiddenAddress, a, c)
}

package sso

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"syscall"
	"time"

	"github.com/mcpid/mcpid/lib/fetch"
)

// fetchTransport serves go-oidc's GETs (discovery, JWKS) through the
// SSRF-safe fetcher: trusted-domain policy, checked addresses, no redirects,
// size and time limits. Anything but GET is refused.
type fetchTransport struct{ f *fetch.Fetcher }

func (t fetchTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil {
		_ = req.Body.Close()
	}
	if req.Method != http.MethodGet {
		return nil, fmt.Errorf("sso: %s %s: only GET goes through the fetcher", req.Method, req.URL.Redacted())
	}
	// GetFresh: go-oidc asks again only when it needs to (a kid it does not
	// know: key rotation), so a cached copy would defeat the purpose. The
	// fetcher's per-host rate limit still bounds it.
	resp, err := t.f.GetFresh(req.Context(), req.URL.String(), req.Header.Get("Accept"))
	if err != nil {
		return nil, err
	}
	h := http.Header{}
	h.Set("Content-Type", resp.ContentType)
	return &http.Response{
		Status: fmt.Sprintf("%d %s", resp.StatusCode, http.StatusText(resp.StatusCode)), StatusCode: resp.StatusCode,
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1, Header: h,
		Body: io.NopCloser(bytes.NewReader(resp.Body)), ContentLength: int64(len(resp.Body)), Request: req,
	}, nil
}

// errForbiddenAddress: the token endpoint resolved to an address the policy
// refuses.
var errForbiddenAddress = errors.New("sso: token endpoint address not allowed")

// NewTokenClient returns the HTTP client of the upstream token endpoint (a POST,
// which the fetcher does not do). It applies the same address rule as the
// fetcher at connect time (after resolution, so DNS cannot rebind it): no
// loopback, private, link-local, CGNAT, metadata, multicast or unspecified
// addresses unless allowPrivate; never a proxy, never a redirect, bounded
// time.
func NewTokenClient(allowPrivate bool, timeout time.Duration) *http.Client {
	d := &net.Dialer{
		Timeout: timeout,
		Control: func(_, address string, _ syscall.RawConn) error {
			ap, err := netip.ParseAddrPort(address)
			if err != nil {
				return fmt.Errorf("%w: %s", errForbiddenAddress, address)
			}
			if !addrAllowed(ap.Addr().Unmap(), allowPrivate) {
				return fmt.Errorf("%w: %s", errForbiddenAddress, address)
			}
			return nil
		},
	}
	tr := &http.Transport{
		Proxy:                  nil,
		DialContext:            d.DialContext,
		ForceAttemptHTTP2:      true,
		MaxResponseHeaderBytes: 64 << 10,
		MaxIdleConnsPerHost:    2,
		IdleConnTimeout:        30 * time.Second,
		TLSHandshakeTimeout:    timeout,
	}
	return &http.Client{
		Transport: tr,
		Timeout:   timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

var (
	metadataV4 = netip.MustParseAddr("169.254.169.254")
	metadataV6 = netip.MustParseAddr("fd00:ec2::254")
	cgnat      = netip.MustParsePrefix("100.64.0.0/10")
)

func addrAllowed(a netip.Addr, allowPrivate bool) bool {
	switch {
	case !a.IsValid(), a.IsUnspecified(), a.IsMulticast(), a.IsInterfaceLocalMulticast(),
		a == metadataV4, a == metadataV6:
		return false
	case a.IsLoopback(), a.IsPrivate(), a.IsLinkLocalUnicast(), cgnat.Contains(a):
		return allowPrivate
	}
	return a.IsGlobalUnicast()
}

// detached keeps ctx's values but not its cancellation: go-oidc keeps the
// context it discovered with for later key refreshes.
func detached(ctx context.Context) context.Context { return context.WithoutCancel(ctx) }

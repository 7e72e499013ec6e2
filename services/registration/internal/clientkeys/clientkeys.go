// Package clientkeys finds the keys that verify a client's private_key_jwt
// assertions: its jwks by value (parsed once per distinct set) or its
// jwks_uri (fetched through lib/fetch's SSRF-safe fetcher and cached by
// lib/jose's KeySetCache, refreshed on an unknown kid at a bounded rate).
package clientkeys

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"sync"

	"github.com/mcpid/mcpid/lib/fetch"
	"github.com/mcpid/mcpid/lib/jose"
)

// maxCached bounds each cache (key sets by value, jwks_uri caches): enough
// for every active client of a large installation, and a bound against a
// flood of registrations naming ever new URIs.
const maxCached = 10000

// maxJWKSBytes bounds a fetched JWKS.
const maxJWKSBytes = 64 << 10

// ErrNoKeys means the set holds no usable signature key, or cannot be fetched.
var ErrNoKeys = errors.New("clientkeys: no usable keys")

// Keys hands out key sources. It is safe for concurrent use.
type Keys struct {
	fetcher *fetch.Fetcher
	opts    jose.CacheOptions

	mu     sync.Mutex
	inline map[[32]byte]*jose.KeySet
	remote map[string]*jose.KeySetCache
}

// New returns Keys fetching with cfg (its host policy is set to any host:
// a client may host its keys anywhere public; the address checks stay).
func New(cfg fetch.Config, opts jose.CacheOptions) (*Keys, error) {
	cfg.AllowedHosts, cfg.HostPolicy, cfg.AllowAnyHost = nil, nil, true
	cfg.MaxBodyBytes = maxJWKSBytes
	f, err := fetch.New(cfg)
	if err != nil {
		return nil, err
	}
	return &Keys{fetcher: f, opts: opts, inline: map[[32]byte]*jose.KeySet{}, remote: map[string]*jose.KeySetCache{}}, nil
}

// Close releases idle connections.
func (k *Keys) Close() { k.fetcher.Close() }

// Inline returns the key set of a jwks given by value.
func (k *Keys) Inline(jwks []byte) (*jose.KeySet, error) {
	sum := sha256.Sum256(jwks)
	k.mu.Lock()
	if s, ok := k.inline[sum]; ok {
		k.mu.Unlock()
		return s, nil
	}
	k.mu.Unlock()
	s, err := jose.ParseJWKS(jwks)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNoKeys, err)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if len(k.inline) >= maxCached {
		clear(k.inline)
	}
	k.inline[sum] = s
	return s, nil
}

// Remote returns the key source of a jwks_uri.
func (k *Keys) Remote(uri string) jose.KeySource {
	k.mu.Lock()
	defer k.mu.Unlock()
	if c, ok := k.remote[uri]; ok {
		return c
	}
	if len(k.remote) >= maxCached {
		clear(k.remote)
	}
	c := jose.NewKeySetCache(fresh{k.fetcher}, uri, k.opts)
	k.remote[uri] = c
	return c
}

// Check fetches a jwks_uri and verifies it holds a usable signature key
// (registration validates the URI before storing it).
func (k *Keys) Check(ctx context.Context, uri string) error {
	resp, err := k.fetcher.Get(ctx, uri, "application/jwk-set+json, application/json")
	if err != nil {
		return fmt.Errorf("%w: %w", ErrNoKeys, err)
	}
	s, err := jose.ParseJWKS(resp.Body)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrNoKeys, err)
	}
	if s.Len() == 0 {
		return ErrNoKeys
	}
	return nil
}

// fresh adapts the fetcher to jose.Fetcher. The KeySetCache caches and
// rate-limits itself, and asks again precisely when it needs a newer set
// (an unknown kid), so it bypasses the fetcher's response cache.
type fresh struct{ f *fetch.Fetcher }

func (a fresh) Get(ctx context.Context, url, accept string) ([]byte, error) {
	resp, err := a.f.GetFresh(ctx, url, accept)
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}

package tokens

import (
	"sync/atomic"

	"github.com/mcpid/mcpid/lib/revocationfeed"
)

// FeedRevocations adapts the token service's revocation feed
// (lib/revocationfeed) to Revocations. The follower is set once the service
// has dialled the token service; until then, and whenever the follower is
// not current, checks fail closed (NOT_READY).
type FeedRevocations struct {
	f atomic.Pointer[revocationfeed.Follower]
}

// Set installs the follower.
func (r *FeedRevocations) Set(f *revocationfeed.Follower) { r.f.Store(f) }

// Ready implements Revocations.
func (r *FeedRevocations) Ready() bool {
	f := r.f.Load()
	return f != nil && f.Ready()
}

// Revoked implements Revocations.
func (r *FeedRevocations) Revoked(t *Token) bool {
	f := r.f.Load()
	if f == nil {
		return true
	}
	return f.Revoked(revocationfeed.Token{
		JTI: t.JTI, GrantID: t.GrantID, Subject: t.Subject, ClientID: t.ClientID, Audience: t.Audience, IssuedAt: t.IssuedAt,
	})
}

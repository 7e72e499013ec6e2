package decision

// ClientInfo is what the policy service knows of a client (agent).
type ClientInfo struct {
	// Verified: the client's verification status is VERIFIED.
	Verified bool
	// ApplicationType is "web", "native" or "" when unknown.
	ApplicationType string
}

// Clients tells a client's registration attributes. Implementations answer
// from memory and are safe for concurrent use.
//
// The registration service owns clients and offers the policy service no
// read path yet; until one is wired in, NoClients knows nobody, so every
// client counts as unverified with an unknown application type (the
// contract's fail-closed default).
type Clients interface {
	// Client returns what is known of clientID; false when nothing is.
	Client(clientID string) (ClientInfo, bool)
}

// NoClients knows no client.
type NoClients struct{}

// Client implements Clients.
func (NoClients) Client(string) (ClientInfo, bool) { return ClientInfo{}, false }

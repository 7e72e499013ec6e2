package cluster

import (
	"fmt"
	"net/url"
	"strings"
	"time"
)

func refreshForm(rt, clientID string) url.Values {
	return url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}, "client_id": {clientID}}
}

// figures are the run's numbers, written to docs/BENCHMARKS.md by hand from
// the test's output (make test-cluster prints them).
type figures struct {
	duration             time.Duration
	requests, failed     int
	byKind               map[string][2]int // kind → attempts, failures
	election             time.Duration
	leaderErrs           int
	leaderErrSpan        time.Duration
	leaderRecover        time.Duration
	replicaErrs          int
	replicaErrSpan       time.Duration
	replicaRecover       time.Duration
	clients, grants, rot int
	eventsChecked        int
}

func figuresOf(l *ledger, start, leaderKill, replicaKill time.Time, election time.Duration) *figures {
	f := &figures{byKind: map[string][2]int{}, election: election, clients: len(l.clients), grants: len(l.grants), rot: l.rotations}
	var lastLeaderErr, lastReplicaErr, firstLeaderErr, firstReplicaErr time.Time
	var end time.Time
	for _, o := range l.ops {
		k := f.byKind[o.kind]
		k[0]++
		f.requests++
		if o.end.After(end) {
			end = o.end
		}
		if o.err != nil {
			k[1]++
			f.failed++
			if o.end.Before(replicaKill) {
				f.leaderErrs++
				if firstLeaderErr.IsZero() || o.end.Before(firstLeaderErr) {
					firstLeaderErr = o.end
				}
				if o.end.After(lastLeaderErr) {
					lastLeaderErr = o.end
				}
			} else {
				f.replicaErrs++
				if firstReplicaErr.IsZero() || o.end.Before(firstReplicaErr) {
					firstReplicaErr = o.end
				}
				if o.end.After(lastReplicaErr) {
					lastReplicaErr = o.end
				}
			}
		}
		f.byKind[o.kind] = k
	}
	f.duration = end.Sub(start)
	if !lastLeaderErr.IsZero() {
		f.leaderErrSpan = lastLeaderErr.Sub(firstLeaderErr)
		f.leaderRecover = lastLeaderErr.Sub(leaderKill)
	}
	if !lastReplicaErr.IsZero() {
		f.replicaErrSpan = lastReplicaErr.Sub(firstReplicaErr)
		f.replicaRecover = lastReplicaErr.Sub(replicaKill)
	}
	return f
}

func (f *figures) String() string {
	var b strings.Builder
	r := func(d time.Duration) time.Duration { return d.Round(10 * time.Millisecond) }
	fmt.Fprintf(&b, "load: %d requests in %v, %d failed attempts (all retried)\n", f.requests, r(f.duration), f.failed)
	for _, k := range []string{"register", "authorize", "code_exchange", "refresh", "client_credentials", "policy_check", "audit_query"} {
		fmt.Fprintf(&b, "  %-18s %6d attempts %4d failed\n", k, f.byKind[k][0], f.byKind[k][1])
	}
	fmt.Fprintf(&b, "etcd leader killed: new leader after %v; %d failed attempts over %v; recovered %v after the kill\n",
		r(f.election), f.leaderErrs, r(f.leaderErrSpan), r(f.leaderRecover))
	fmt.Fprintf(&b, "one replica of each service killed: %d failed attempts over %v; recovered %v after the kill\n",
		f.replicaErrs, r(f.replicaErrSpan), r(f.replicaRecover))
	fmt.Fprintf(&b, "checked: %d registrations, %d grants, %d refresh rotations acknowledged; %d audit events checked; chain verified\n",
		f.clients, f.grants, f.rot, f.eventsChecked)
	return b.String()
}

package server_test

import (
	"testing"

	"google.golang.org/grpc/codes"

	auditv1 "github.com/mcpid/mcpid/gen/go/mcpid/audit/v1"
	"github.com/mcpid/mcpid/lib/devca"
	"github.com/mcpid/mcpid/services/audit/internal/chain"
)

// Done when: erasure keeps the chain verifiable.
func TestErasureKeepsTheChainVerifiable(t *testing.T) {
	e := newEnv(t)
	r := e.start(t, nil)
	token := e.as(t, r, e.service(t, devca.ServiceToken))
	admin := e.as(t, r, e.operator(t, devca.RoleAdmin))
	appendOK(t, token, e.login(t, "alice", "c1"), e.login(t, "bob", "c1"))
	appendOK(t, token, e.login(t, "alice", "c2"))
	cp := waitCheckpoint(t, admin, verifyChain(t, admin, nil).GetHeadSequence())

	req := &auditv1.ErasePersonalDataRequest{Target: &auditv1.ErasePersonalDataRequest_UserId{UserId: "alice"}, Justification: "GDPR-42", DryRun: true}
	dry, err := admin.ErasePersonalData(testCtx(t), req)
	if err != nil {
		t.Fatal(err)
	}
	if dry.GetEventsMatched() != 2 || dry.GetValuesErased() != 6 || dry.GetErasureEventId() != "" {
		t.Fatalf("dry run: %v", dry)
	}
	req.DryRun = false
	resp, err := admin.ErasePersonalData(testCtx(t), req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetEventsMatched() != 2 || resp.GetValuesErased() != 6 || resp.GetErasureEventId() == "" || resp.GetOldestRetainedSequence() != 1 {
		t.Fatalf("erase: %v", resp)
	}

	for _, ev := range allEvents(t, admin) {
		erased := 0
		for _, f := range chain.Fields {
			if p := f.Get(ev); p != nil && chain.Erased(p) {
				erased++
				if len(p.GetDigest()) != 32 || p.GetSalt() != nil {
					t.Fatalf("event %d %s: digest %x salt %x", ev.GetSequence(), f.Name, p.GetDigest(), p.GetSalt())
				}
			}
		}
		switch {
		case ev.GetType() == auditv1.EventType_EVENT_TYPE_PERSONAL_DATA_ERASED:
			d := ev.GetDetails().GetFields()
			if ev.GetId() != resp.GetErasureEventId() || ev.GetUserId() != "alice" || d["justification"].GetStringValue() != "GDPR-42" ||
				d["values_erased"].GetNumberValue() != 6 || ev.GetActor().GetKind() != auditv1.ActorKind_ACTOR_KIND_OPERATOR {
				t.Fatalf("erasure event: %v", ev)
			}
		case ev.GetUserId() == "alice" && (erased != 3 || ev.GetEraseTime() == nil):
			t.Fatalf("alice's event %d: %d values erased", ev.GetSequence(), erased)
		case ev.GetUserId() == "bob" && (erased != 0 || ev.GetUserEmail().GetValue() != "bob@example.test"):
			t.Fatalf("bob's event %d was touched", ev.GetSequence())
		}
	}
	v := verifyChain(t, admin, &auditv1.VerifyChainRequest{TrustedCheckpoints: []string{cp.GetJws()}})
	if !v.GetIntact() || v.GetErasedValues() != 6 {
		t.Fatalf("verify after erasure: %v", v)
	}

	// Erasing again is harmless; a range erasure of one field works too.
	again, err := admin.ErasePersonalData(testCtx(t), &auditv1.ErasePersonalDataRequest{
		Target: &auditv1.ErasePersonalDataRequest_SequenceRange{SequenceRange: &auditv1.SequenceRange{FromSequence: 1}},
		Fields: []auditv1.ProtectedField{auditv1.ProtectedField_PROTECTED_FIELD_SOURCE_ADDRESS}, Justification: "secrets-in-logs",
	})
	if err != nil || again.GetValuesErased() != 1 {
		t.Fatalf("range erasure: %v %v", again, err)
	}
	if v := verifyChain(t, admin, nil); !v.GetIntact() || v.GetErasedValues() != 7 {
		t.Fatalf("verify after the second erasure: %v", v)
	}
}

func TestErasureRefusals(t *testing.T) {
	e := newEnv(t)
	r := e.start(t, nil)
	admin := e.as(t, r, e.operator(t, devca.RoleAdmin))
	_, err := e.as(t, r, e.operator(t, devca.RoleAuditor)).ErasePersonalData(testCtx(t), &auditv1.ErasePersonalDataRequest{
		Target: &auditv1.ErasePersonalDataRequest_UserId{UserId: "alice"}, Justification: "x"})
	wantErr(t, "auditor", err, codes.PermissionDenied, auditv1.ErrorReason_ERROR_REASON_CALLER_NOT_ALLOWED)
	cases := map[string]*auditv1.ErasePersonalDataRequest{
		"no target":        {Justification: "x"},
		"no justification": {Target: &auditv1.ErasePersonalDataRequest_UserId{UserId: "alice"}},
		"empty range":      {Target: &auditv1.ErasePersonalDataRequest_SequenceRange{SequenceRange: &auditv1.SequenceRange{}}, Justification: "x"},
		"inverted range": {Target: &auditv1.ErasePersonalDataRequest_SequenceRange{SequenceRange: &auditv1.SequenceRange{FromSequence: 5, ThroughSequence: 2}},
			Justification: "x"},
		"bad field": {Target: &auditv1.ErasePersonalDataRequest_UserId{UserId: "alice"}, Justification: "x",
			Fields: []auditv1.ProtectedField{auditv1.ProtectedField_PROTECTED_FIELD_UNSPECIFIED}},
	}
	for name, req := range cases {
		_, err := admin.ErasePersonalData(testCtx(t), req)
		wantErr(t, name, err, codes.InvalidArgument, auditv1.ErrorReason_ERROR_REASON_INVALID_FIELD)
	}
	_, err = admin.ErasePersonalData(testCtx(t), &auditv1.ErasePersonalDataRequest{
		Target:        &auditv1.ErasePersonalDataRequest_SequenceRange{SequenceRange: &auditv1.SequenceRange{FromSequence: 500}},
		Justification: "x"})
	wantErr(t, "range after the head", err, codes.OutOfRange, auditv1.ErrorReason_ERROR_REASON_RANGE_NOT_RETAINED)
}

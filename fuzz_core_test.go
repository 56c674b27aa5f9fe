package raft

import (
	"testing"
)

// FuzzCoreStep feeds a core arbitrary messages, as a hostile or buggy peer
// could send them, and checks that it never panics and that its own
// invariants hold after every step: invariantChecker's, which a lone core
// must keep whatever its peers say, and the shape of its whole log. (Log
// Matching across nodes assumes honest peers, so it is not checked here.) The input is a sequence of records: one
// control byte (bit 0: tick first; bit 1: sender 3 instead of 2), one length
// byte, then that many bytes of a Message encoding (codec.go).
func FuzzCoreStep(f *testing.F) {
	seed := func(msgs ...Message) []byte {
		var out []byte
		for i, m := range msgs {
			b, err := m.MarshalBinary()
			if err != nil {
				f.Fatal(err)
			}
			out = append(out, byte(i), byte(len(b)))
			out = append(out, b...)
		}
		return out
	}
	f.Add(seed(
		Message{Type: MsgAppend, From: 2, To: 1, Term: 2, Index: 1, LogTerm: 1, Entries: []Entry{{Index: 2, Term: 2, Data: []byte("a")}}, Commit: 2},
		Message{Type: MsgHeartbeat, From: 2, To: 1, Term: 2, Commit: 2, Context: 1},
	))
	f.Add(seed(
		Message{Type: MsgVote, From: 3, To: 1, Term: 5, Index: 9, LogTerm: 4},
		Message{Type: MsgAppend, From: 3, To: 1, Term: 5, Index: 1, LogTerm: 1, Entries: []Entry{{Index: 2, Term: 5, Type: EntryConfChange, Data: []byte{1, 0}}}},
	))
	f.Add(seed(
		Message{Type: MsgPreVoteResp, From: 2, To: 1, Term: 2},
		Message{Type: MsgVoteResp, From: 2, To: 1, Term: 2},
		Message{Type: MsgAppendResp, From: 2, To: 1, Term: 2, Index: 7, Reject: true, HintIndex: 3, HintTerm: 1},
		Message{Type: MsgReadIndex, From: 3, To: 1, Term: 2, Context: 4},
		Message{Type: MsgTimeoutNow, From: 2, To: 1, Term: 2},
	))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := newCore(coreConfig{
			id: 1, electionTicks: 3, heartbeatTicks: 1, preVote: len(data)%2 == 0, checkQuorum: true,
			maxInflight: 4, maxAppendBytes: 64, maxUncommittedEntries: 64, maxUncommittedBytes: 1 << 16, seed: 1,
			hardState: HardState{Term: 1, Commit: 1}, entries: []Entry{configEntry(1, 1, 1, 2, 3)},
		})
		if err != nil {
			t.Fatal(err)
		}
		var saved HardState
		check := newInvariantChecker()
		for len(data) >= 2 {
			ctl, n := data[0], int(data[1])
			data = data[2:]
			if n > len(data) {
				n = len(data)
			}
			var m Message
			if ctl&1 != 0 {
				c.tick()
			}
			if m.UnmarshalBinary(data[:n]) == nil {
				m.To = 1
				m.From = 2 + uint64(ctl>>1&1)
				c.step(m)
			}
			data = data[n:]
			_, _, _ = c.propose([]byte("p"))
			rd := c.ready(saved)
			saved = rd.hardState
			if k := len(rd.entries); k > 0 {
				c.persisted(rd.entries[k-1].Index, rd.entries[k-1].Term)
			}
			if err := check.check(c); err != nil {
				t.Fatal(err)
			}
			if err := checkLogShape(&c.log); err != nil {
				t.Fatal(err)
			}
		}
	})
}

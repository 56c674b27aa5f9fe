package raft

import (
	"fmt"
	"testing"
)

// FuzzCoreStep feeds a core arbitrary messages, as a hostile or buggy peer
// could send them, and checks that it never panics and that its own
// invariants hold after every step. The input is a sequence of records: one
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
		lastCommit, lastTerm := c.log.committed, c.term
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
			if err := checkCoreInvariants(c, lastCommit, lastTerm); err != nil {
				t.Fatal(err)
			}
			lastCommit, lastTerm = c.log.committed, c.term
		}
	})
}

// checkCoreInvariants checks what must hold of any core at any time.
func checkCoreInvariants(c *core, lastCommit, lastTerm uint64) error {
	l := &c.log
	switch {
	case c.term < lastTerm:
		return fmt.Errorf("term went back from %d to %d", lastTerm, c.term)
	case l.committed < lastCommit:
		return fmt.Errorf("commit went back from %d to %d", lastCommit, l.committed)
	case l.committed > l.lastIndex():
		return fmt.Errorf("commit %d beyond the last index %d", l.committed, l.lastIndex())
	case l.stable > l.lastIndex() || l.applying > l.committed:
		return fmt.Errorf("stable %d / applying %d out of range (last %d, commit %d)", l.stable, l.applying, l.lastIndex(), l.committed)
	case l.lastTerm() > c.term:
		return fmt.Errorf("last entry's term %d above the current term %d", l.lastTerm(), c.term)
	}
	prevTerm := l.offsetTerm
	for i, e := range l.entries {
		if e.Index != l.offset+1+uint64(i) {
			return fmt.Errorf("entry %d at position %d", e.Index, i)
		}
		if e.Term < prevTerm {
			return fmt.Errorf("entry %d has term %d below its predecessor's %d", e.Index, e.Term, prevTerm)
		}
		prevTerm = e.Term
	}
	return nil
}

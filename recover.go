package raft

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
)

// recoveryTermStep is how far RecoverCluster moves terms. Every term a
// running cluster uses stays within one step of its members' terms (that
// would take four billion elections), so terms from one step up are unused
// by any real leader: the recovery entries and the recovered nodes' term
// live there. See RecoverCluster for the rules.
const recoveryTermStep = 1 << 32

// RecoverCluster rewrites the configuration a node will start with, after
// the cluster lost its quorum for good (more than half of its voters are
// gone and will never come back). It is the last resort for an operator:
// it is UNSAFE, and breaks Raft's guarantees if misused.
//
// Procedure (docs/protocol.md, "Disaster recovery"):
//
//  1. Stop every surviving node (Node.Close, or stop its process). The
//     Node must NOT be running on storage while RecoverCluster runs, and
//     no other goroutine may use storage meanwhile. For a FileStorage use
//     RecoverClusterDir, which refuses (ErrLocked) a directory that a
//     running node holds.
//  2. Run RecoverCluster on the storage of EVERY survivor, with the SAME
//     members list on each (typically exactly the survivors), before
//     starting any of them.
//  3. Start the survivors as usual; make sure the lost nodes never start
//     again with their old storage (wipe it).
//
// The survivors then form a cluster of members: they elect the one whose
// log is the most up to date (Raft §5.4.1), whose log holds every entry that
// any survivor knew committed, and the others catch up from it. With two
// survivors both must be up to elect a leader, so the most up-to-date one
// always takes part; with more survivors, start all of them, or a majority
// that lacks a write only one survivor had may elect a leader without it.
//
// What is lost: entries that none of the survivors holds (the old cluster
// may have committed them with the lost nodes) and uncommitted entries of
// the less up-to-date survivors. Recovering only some survivors, or giving
// them different member lists, can lose committed entries or make the
// survivors' logs diverge: the recovered nodes would accept, as matching,
// entries that differ.
//
// How: the new configuration is appended as a configuration entry after the
// last stored entry, with the last entry's term plus 2^32, and the stored
// term moves to the next multiple of 2^32 above every term in the storage,
// plus 2^32, with no vote: the same term on every survivor, since their
// terms lie between the same multiples of 2^32 (leaving them would take
// billions of elections). So the recovery entries keep the order of the
// survivors' logs (the most up-to-date log stays the most up to date), no
// real entry has the term of a recovery entry (so a leader never mistakes
// one for its own, Raft §5.3), and every term an election will use is
// above them. The entry
// is not marked committed: a configuration takes effect when appended
// (dissertation §4.1), and the leader's no-op commits it, or replaces it
// on a survivor that was behind. Running RecoverCluster again with the
// same members before the node started does nothing.
//
// It fails with an error wrapping ErrInvalidConfig when members is empty,
// lists an ID 0 or an ID twice, has no voter, or mixes members with and
// without addresses, and when storage holds no state (nothing to
// recover: such a node is a joiner).
func RecoverCluster(storage Storage, members []Member) error {
	if err := validateRecoveryMembers("RecoverCluster", members); err != nil {
		return err
	}
	members = canonicalMembers(members)
	wrap := func(err error) error { return fmt.Errorf("raft: RecoverCluster: reading storage: %w", err) }
	hs, err := storage.InitialState()
	if err != nil {
		return wrap(err)
	}
	if err := finishSnapshotInstall(storage); err != nil {
		return err
	}
	last, err := storage.LastIndex()
	if err != nil {
		return wrap(err)
	}
	lastTerm, err := storage.Term(last)
	if err != nil {
		return wrap(err)
	}
	if hs == (HardState{}) && last == 0 {
		return fmt.Errorf("%w: RecoverCluster: the storage holds no state, so there is nothing to recover "+
			"(a node on empty storage joins a cluster; add it to the recovered one instead)", ErrInvalidConfig)
	}
	if done, err := recoveredAlready(storage, hs, last, lastTerm, members); err != nil || done {
		return err
	}
	top := max(hs.Term, lastTerm)
	if top >= math.MaxUint64-3*recoveryTermStep {
		return fmt.Errorf("%w: RecoverCluster: stored term %d leaves no room for a recovery term", ErrCorrupt, top)
	}
	e := Entry{Index: last + 1, Term: lastTerm + recoveryTermStep, Type: EntryConfChange, Data: encodeMembers(members)}
	// The node's term: the next multiple of the step above every term it
	// stores, plus one step, so that it is the same on every survivor and
	// above every survivor's recovery entry.
	// The origin stays: the recovered cluster is the same cluster.
	hs = HardState{Term: (top/recoveryTermStep + 2) * recoveryTermStep, Commit: hs.Commit, Origin: hs.Origin}
	if err := storage.Save(hs, []Entry{e}); err != nil {
		return fmt.Errorf("raft: RecoverCluster: writing the recovered configuration: %w", err)
	}
	return nil
}

// finishSnapshotInstall discards the log behind the newest snapshot when
// the log does not continue it, as the Node does when it starts (a crash
// between storing a leader's snapshot and discarding the log it replaces
// leaves such a log): the recovery entry must follow the log the node will
// start with, or the Node would discard it with the rest.
func finishSnapshotInstall(storage Storage) error {
	meta, rc, err := storage.Snapshot()
	if errors.Is(err, ErrNoSnapshot) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("raft: RecoverCluster: reading the snapshot: %w", err)
	}
	rc.Close()
	last, err := storage.LastIndex()
	if err != nil {
		return fmt.Errorf("raft: RecoverCluster: reading storage: %w", err)
	}
	if meta.Index > 0 && meta.Index <= last {
		if t, err := storage.Term(meta.Index); err == nil && t == meta.Term {
			return nil
		}
	}
	if err := storage.Compact(meta.Index, meta.Term); err != nil {
		return fmt.Errorf("raft: RecoverCluster: discarding the log behind snapshot %d: %w", meta.Index, err)
	}
	return nil
}

// RecoverClusterDir runs RecoverCluster on the FileStorage in dir, opened
// with opts, and closes it. It fails with ErrLocked while a Node (in this
// process or another) runs on that directory.
func RecoverClusterDir(dir string, members []Member, opts ...FileOption) (err error) {
	if err := validateRecoveryMembers("RecoverCluster", members); err != nil {
		return err
	}
	s, err := OpenFileStorage(dir, opts...)
	if err != nil {
		return fmt.Errorf("raft: RecoverClusterDir: %w", err)
	}
	defer func() {
		if cerr := s.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("raft: RecoverClusterDir: closing the storage: %w", cerr)
		}
	}()
	return RecoverCluster(s, members)
}

// validateRecoveryMembers checks the configuration an operator gives
// RecoverCluster or RestoreBackup (op, named in the error), with the rules
// Config.Validate applies to InitialMembers.
func validateRecoveryMembers(op string, members []Member) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s: "+format, append([]any{ErrInvalidConfig, op}, args...)...)
	}
	if len(members) == 0 {
		return bad("no members given")
	}
	if err := checkMemberList("members", members); err != nil {
		return bad("%s", err)
	}
	withAddr := 0
	for _, m := range members {
		if m.Addr != "" {
			withAddr++
		}
	}
	if withAddr != 0 && withAddr != len(members) {
		// The transport dials members by address: one without would be
		// unreachable.
		return bad("some members have an address and others do not")
	}
	return nil
}

// canonicalMembers returns a copy of members sorted by ID, so that every
// survivor given the same members writes the same bytes, whatever their
// order: survivors whose logs end alike must write identical entries.
func canonicalMembers(members []Member) []Member {
	out := make([]Member, len(members))
	for i, m := range members {
		m.Meta = maps.Clone(m.Meta)
		if len(m.Meta) == 0 {
			m.Meta = nil
		}
		out[i] = m
	}
	slices.SortFunc(out, func(a, b Member) int { return cmp.Compare(a.ID, b.ID) })
	return out
}

// recoveredAlready reports whether storage ends with the recovery of
// members and the node has not run since: the last entry is a recovery
// entry (its term a step above the stored term's multiple) listing
// members, and the term and vote are as RecoverCluster left them.
func recoveredAlready(storage Storage, hs HardState, last, lastTerm uint64, members []Member) (bool, error) {
	if last == 0 || hs.Vote != 0 || hs.Term%recoveryTermStep != 0 || lastTerm >= hs.Term || lastTerm < recoveryTermStep {
		return false, nil
	}
	first, err := storage.FirstIndex()
	if err != nil || last < first {
		return false, err
	}
	es, err := storage.Entries(last, last+1)
	if err != nil {
		return false, fmt.Errorf("raft: RecoverCluster: reading storage: %w", err)
	}
	if es[0].Type != EntryConfChange {
		return false, nil
	}
	stored, err := decodeMembers(es[0].Data)
	if err != nil {
		return false, fmt.Errorf("raft: RecoverCluster: entry %d: %w", last, err)
	}
	return sameMembers(stored, members), nil
}

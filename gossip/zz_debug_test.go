package gossip

import (
	"fmt"
	"os"
	"sort"
	"testing"
	"time"
)

func TestZZDebugConverge(t *testing.T) {
	if os.Getenv("RBEE_DBG") == "" {
		t.Skip()
	}
	n := 100
	start := time.Now()
	gs, _ := simMembers(t, n, ProfileLAN)
	fmt.Println("joined", time.Since(start))
	for k := 0; k < 60; k++ {
		counts := make([]int, n)
		missing := map[string]int{}
		for i, g := range gs {
			counts[i] = g.NumMembers()
			if counts[i] < n {
				have := map[string]bool{}
				for _, m := range g.Members() {
					if m.State == StateAlive || m.State == StateSuspect {
						have[m.ID] = true
					}
				}
				for j := range gs {
					id := fmt.Sprintf("m%04d", j)
					if !have[id] {
						missing[id]++
					}
				}
			}
		}
		sorted := append([]int(nil), counts...)
		sort.Ints(sorted)
		lagging := 0
		for _, c := range counts {
			if c < n {
				lagging++
			}
		}
		var probs uint64
		for _, g := range gs {
			probs += g.Problems()
		}
		fmt.Printf("t=%v lagging=%d min=%d med=%d missing=%v problems=%d\n", time.Since(start).Round(time.Second), lagging, sorted[0], sorted[n/2], missing, probs)
		if lagging == 0 {
			break
		}
		time.Sleep(2 * time.Second)
	}
}

// pprof_app is a small Go service that exposes net/http/pprof and keeps
// busy: CPU work inside pprof.Do with span_id labels (what the Pyroscope Go
// SDK's span profiles do), allocations, and mutex/channel contention. The
// pprof_scrape integration test scrapes it. Standard library only.
//
// usage: go run pprof_app.go <port file>
package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	_ "net/http/pprof"
	"os"
	"runtime"
	"runtime/pprof"
	"sync"
	"time"
)

var sink [][]byte

func burn(d time.Duration) float64 {
	end := time.Now().Add(d)
	x := 0.0
	for time.Now().Before(end) {
		for i := 0; i < 1000; i++ {
			x += float64(i) * 1.0000001
		}
	}
	return x
}

func main() {
	runtime.SetMutexProfileFraction(1)
	runtime.SetBlockProfileRate(1)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	if err := os.WriteFile(os.Args[1], []byte(fmt.Sprintf("%d\n", port)), 0o644); err != nil {
		panic(err)
	}
	spans := []string{"00000000000000d1", "00000000000000e2", "00000000000000f3"}
	go func() {
		for i := 0; ; i++ {
			id := spans[i%len(spans)]
			pprof.Do(context.Background(), pprof.Labels("span_id", id, "span_name", "work"),
				func(context.Context) {
					burn(20 * time.Millisecond)
					sink = append(sink, make([]byte, 4096))
					if len(sink) > 256 {
						sink = sink[:0]
					}
				})
		}
	}()
	var mu sync.Mutex
	for g := 0; g < 2; g++ {
		go func() {
			for {
				mu.Lock()
				time.Sleep(time.Millisecond)
				mu.Unlock()
			}
		}()
	}
	panic(http.Serve(ln, nil))
}

// Package metrics serves a node's OpenTelemetry metrics as Prometheus text
// (GET /metrics). The node records through an OpenTelemetry SDK
// MeterProvider (raft.Config.MeterProvider); this package reads it with a
// ManualReader at each scrape and writes the Prometheus text format itself.
// A host would normally use the OpenTelemetry Prometheus exporter; the
// example writes the format by hand so that the Prometheus client stays out
// of the raftkit module's dependencies (the example lives in that module).
package metrics

import (
	"bufio"
	"context"
	"fmt"
	"math"
	"net/http"
	"sort"
	"strconv"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

// Exporter is a MeterProvider for one node and the HTTP handler that
// serves what it recorded.
type Exporter struct {
	reader   *sdkmetric.ManualReader
	Provider *sdkmetric.MeterProvider
}

// New returns an Exporter; pass its Provider as raft.Config.MeterProvider.
func New() *Exporter {
	r := sdkmetric.NewManualReader()
	return &Exporter{reader: r, Provider: sdkmetric.NewMeterProvider(sdkmetric.WithReader(r))}
}

// Shutdown stops the provider.
func (e *Exporter) Shutdown(ctx context.Context) error { return e.Provider.Shutdown(ctx) }

// ServeHTTP writes every metric in the Prometheus text format (version
// 0.0.4).
func (e *Exporter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var rm metricdata.ResourceMetrics
	if err := e.reader.Collect(r.Context(), &rm); err != nil {
		http.Error(w, "collecting metrics: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	bw := bufio.NewWriter(w)
	defer bw.Flush()
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			Write(bw, m)
		}
	}
}

// Write writes one metric in the Prometheus text format. Names follow the
// usual translation of OpenTelemetry names: dots become underscores, the
// unit becomes a suffix (s: _seconds, By: _bytes), and monotonic sums end
// in _total.
func Write(w *bufio.Writer, m metricdata.Metrics) {
	name := promName(m.Name, m.Unit)
	help := func(typ string) {
		if m.Description != "" {
			fmt.Fprintf(w, "# HELP %s %s\n", name, strings.ReplaceAll(m.Description, "\n", " "))
		}
		fmt.Fprintf(w, "# TYPE %s %s\n", name, typ)
	}
	switch d := m.Data.(type) {
	case metricdata.Gauge[int64]:
		help("gauge")
		for _, p := range d.DataPoints {
			line(w, name, p.Attributes, nil, float64(p.Value))
		}
	case metricdata.Gauge[float64]:
		help("gauge")
		for _, p := range d.DataPoints {
			line(w, name, p.Attributes, nil, p.Value)
		}
	case metricdata.Sum[int64]:
		name = sumName(name, d.IsMonotonic)
		help(sumType(d.IsMonotonic))
		for _, p := range d.DataPoints {
			line(w, name, p.Attributes, nil, float64(p.Value))
		}
	case metricdata.Sum[float64]:
		name = sumName(name, d.IsMonotonic)
		help(sumType(d.IsMonotonic))
		for _, p := range d.DataPoints {
			line(w, name, p.Attributes, nil, p.Value)
		}
	case metricdata.Histogram[float64]:
		help("histogram")
		for _, p := range d.DataPoints {
			histogram(w, name, p.Attributes, p.Bounds, p.BucketCounts, p.Sum, p.Count)
		}
	case metricdata.Histogram[int64]:
		help("histogram")
		for _, p := range d.DataPoints {
			histogram(w, name, p.Attributes, p.Bounds, p.BucketCounts, float64(p.Sum), p.Count)
		}
	}
}

func histogram(w *bufio.Writer, name string, attrs attribute.Set, bounds []float64, counts []uint64, sum float64, count uint64) {
	var cum uint64
	for i, b := range bounds {
		cum += counts[i]
		line(w, name+"_bucket", attrs, []string{"le", strconv.FormatFloat(b, 'g', -1, 64)}, float64(cum))
	}
	line(w, name+"_bucket", attrs, []string{"le", "+Inf"}, float64(count))
	line(w, name+"_sum", attrs, nil, sum)
	line(w, name+"_count", attrs, nil, float64(count))
}

func sumName(name string, monotonic bool) string {
	if monotonic {
		return name + "_total"
	}
	return name
}

func sumType(monotonic bool) string {
	if monotonic {
		return "counter"
	}
	return "gauge"
}

// line writes one sample; extra is one more label (a histogram's le).
func line(w *bufio.Writer, name string, attrs attribute.Set, extra []string, v float64) {
	var labels []string
	for _, kv := range attrs.ToSlice() {
		labels = append(labels, fmt.Sprintf("%s=%q", sanitize(string(kv.Key)), kv.Value.String()))
	}
	sort.Strings(labels)
	if extra != nil {
		labels = append(labels, fmt.Sprintf("%s=%q", extra[0], extra[1]))
	}
	w.WriteString(name)
	if len(labels) > 0 {
		w.WriteString("{" + strings.Join(labels, ",") + "}")
	}
	w.WriteString(" " + formatValue(v) + "\n")
}

func formatValue(v float64) string {
	switch {
	case math.IsInf(v, 1):
		return "+Inf"
	case math.IsInf(v, -1):
		return "-Inf"
	case math.IsNaN(v):
		return "NaN"
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}

func promName(name, unit string) string {
	n := sanitize(name)
	switch unit {
	case "s":
		n += "_seconds"
	case "By":
		n += "_bytes"
	case "ms":
		n += "_milliseconds"
	}
	return n
}

// sanitize replaces what Prometheus names may not hold with underscores.
func sanitize(s string) string {
	b := []byte(s)
	for i, c := range b {
		ok := c == '_' || c == ':' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' && i > 0
		if !ok {
			b[i] = '_'
		}
	}
	return string(b)
}

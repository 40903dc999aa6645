package eval

import (
	"fmt"
	"html"
	"io"
	"math"
	"path/filepath"
	"strings"
)

// embedding is what Plot draws: the joint PCA coordinates of the real
// rows [0, nReal) and the generated rows after them.
type embedding struct {
	scores                *Dense
	nReal                 int
	realLabels, genLabels []string
	var1, var2            float64 // explained variance ratios of PC1, PC2
}

// palette is matplotlib's tab20 reordered so the first ten are tab10.
var palette = []string{
	"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
	"#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5",
}

const (
	colReal  = "#1f77b4"
	colGen   = "#ff7f0e"
	colOther = "#bbbbbb"
)

// Plot writes an SVG picture of real and generated cells in the same 2-D
// embedding (PC1 and PC2 of the joint PCA): left coloured by source,
// right by label (real cells filled, generated cells as rings; generated
// cells without a label in grey). At most maxPerSet cells of each set are
// drawn (a seeded subsample, 0: all), in a random order so neither set
// hides the other.
func (r *Report) Plot(w io.Writer, maxPerSet int) error {
	e := r.embedding
	if e.scores == nil || e.scores.Cols < 2 {
		return fmt.Errorf("plot: the report has no embedding")
	}
	rnd := newRand(r.Seed, streamPlot)
	nGen := e.scores.Rows - e.nReal
	ri := subsample(rnd, e.nReal, maxPerSet)
	gi := subsample(rnd, nGen, maxPerSet)
	idx := append([]int(nil), ri...)
	for _, i := range gi {
		idx = append(idx, e.nReal+i)
	}
	rnd.Shuffle(len(idx), func(a, b int) { idx[a], idx[b] = idx[b], idx[a] })

	// Label colours: classes in order of first appearance among the real
	// labels (sorted), then generated-only labels.
	classes := classOrder(nil, e.realLabels, e.genLabels)
	color := map[string]string{}
	for k, c := range classes {
		if k < len(palette) {
			color[c] = palette[k]
		} else {
			color[c] = colOther
		}
	}
	labelOf := func(i int) (string, bool) {
		if i < e.nReal {
			if e.realLabels == nil {
				return "", false
			}
			return e.realLabels[i], true
		}
		if e.genLabels == nil {
			return "", false
		}
		return e.genLabels[i-e.nReal], true
	}

	xmin, xmax, ymin, ymax := math.Inf(1), math.Inf(-1), math.Inf(1), math.Inf(-1)
	for _, i := range idx {
		x, y := e.scores.Data[i*e.scores.Cols], e.scores.Data[i*e.scores.Cols+1]
		xmin, xmax = math.Min(xmin, x), math.Max(xmax, x)
		ymin, ymax = math.Min(ymin, y), math.Max(ymax, y)
	}
	padx, pady := 0.04*(xmax-xmin)+1e-9, 0.04*(ymax-ymin)+1e-9
	xmin, xmax, ymin, ymax = xmin-padx, xmax+padx, ymin-pady, ymax+pady

	const (
		W, H         = 1240, 630
		pw, ph       = 440, 440 // panel plot area
		top, left    = 100, 70
		gap          = 620 // panel offset
		legendOffset = pw + 12
	)
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", W, H, W, H)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="white"/>`+"\n", W, H)
	fmt.Fprintf(&b, `<text x="%d" y="28" font-size="16" font-weight="bold">Real and generated cells in the same embedding (joint PCA of %d + %d cells)</text>`+"\n",
		left, e.nReal, nGen)
	fmt.Fprintf(&b, `<text x="%d" y="48" fill="#555">real: %s (%d cells) · generated: %s (%d cells) · drawn: %d + %d</text>`+"\n",
		left, html.EscapeString(shortNames(r.Real.Name)), r.Real.Used, html.EscapeString(shortNames(r.Generated.Name)), r.Generated.Used, len(ri), len(gi))
	fmt.Fprintf(&b, `<text x="%d" y="66" fill="#555">gene-mean Spearman %s · MMD %.4f · kNN accuracy %s · random-forest accuracy %s (0.5: indistinguishable)</text>`+"\n",
		left, num(r.GeneMeans.Spearman), r.MMD.Value, num(r.KNN.Accuracy), num(r.Forest.Accuracy))

	for panel := 0; panel < 2; panel++ {
		ox := left + panel*gap
		title := "coloured by source"
		if panel == 1 {
			title = "coloured by label (filled: real, rings: generated)"
		}
		fmt.Fprintf(&b, `<g transform="translate(%d,%d)">`+"\n", ox, top)
		fmt.Fprintf(&b, `<text x="0" y="-8" font-weight="bold">%s</text>`+"\n", title)
		fmt.Fprintf(&b, `<rect x="0" y="0" width="%d" height="%d" fill="none" stroke="#333"/>`+"\n", pw, ph)
		axes(&b, xmin, xmax, ymin, ymax, pw, ph)
		fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle">PC1 (%.1f %% of variance)</text>`+"\n", pw/2, ph+38, 100*e.var1)
		fmt.Fprintf(&b, `<text transform="translate(-48,%d) rotate(-90)" text-anchor="middle">PC2 (%.1f %% of variance)</text>`+"\n", ph/2, 100*e.var2)
		for _, i := range idx {
			x := (e.scores.Data[i*e.scores.Cols] - xmin) / (xmax - xmin) * pw
			y := ph - (e.scores.Data[i*e.scores.Cols+1]-ymin)/(ymax-ymin)*ph
			real := i < e.nReal
			if panel == 0 {
				c := colGen
				if real {
					c = colReal
				}
				fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="2" fill="%s" fill-opacity="0.45"/>`+"\n", x, y, c)
				continue
			}
			c := colOther
			if l, ok := labelOf(i); ok {
				c = color[l]
			}
			if real {
				fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="2" fill="%s" fill-opacity="0.5"/>`+"\n", x, y, c)
			} else {
				fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="2.2" fill="none" stroke="%s" stroke-width="0.9" stroke-opacity="0.7"/>`+"\n", x, y, c)
			}
		}
		// Legend.
		ly := 8
		item := func(c string, ring bool, text string) {
			if ring {
				fmt.Fprintf(&b, `<circle cx="%d" cy="%d" r="4" fill="none" stroke="%s" stroke-width="1.5"/>`, legendOffset+6, ly, c)
			} else {
				fmt.Fprintf(&b, `<circle cx="%d" cy="%d" r="4" fill="%s"/>`, legendOffset+6, ly, c)
			}
			fmt.Fprintf(&b, `<text x="%d" y="%d">%s</text>`+"\n", legendOffset+16, ly+4, html.EscapeString(clip(text, 22)))
			ly += 18
		}
		if panel == 0 {
			item(colReal, false, fmt.Sprintf("real (%d)", len(ri)))
			item(colGen, false, fmt.Sprintf("generated (%d)", len(gi)))
		} else {
			for k, c := range classes {
				if k == len(palette) {
					item(colOther, false, fmt.Sprintf("%d more labels", len(classes)-k))
					break
				}
				item(color[c], false, c)
			}
			if e.genLabels == nil {
				item(colOther, true, "generated (unlabelled)")
			}
			if e.realLabels == nil {
				item(colOther, false, "real (unlabelled)")
			}
		}
		b.WriteString("</g>\n")
	}
	b.WriteString("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// axes draws ticks and tick labels on the left and bottom edges of a
// pw × ph panel showing [xmin, xmax] × [ymin, ymax].
func axes(b *strings.Builder, xmin, xmax, ymin, ymax float64, pw, ph int) {
	for _, t := range ticks(xmin, xmax) {
		x := (t - xmin) / (xmax - xmin) * float64(pw)
		fmt.Fprintf(b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#333"/><text x="%.1f" y="%d" text-anchor="middle" fill="#555">%s</text>`+"\n",
			x, ph, x, ph+5, x, ph+18, tickLabel(t))
	}
	for _, t := range ticks(ymin, ymax) {
		y := float64(ph) - (t-ymin)/(ymax-ymin)*float64(ph)
		fmt.Fprintf(b, `<line x1="-5" y1="%.1f" x2="0" y2="%.1f" stroke="#333"/><text x="-8" y="%.1f" text-anchor="end" fill="#555">%s</text>`+"\n",
			y, y, y+4, tickLabel(t))
	}
}

// ticks returns round values (steps of 1, 2 or 5 × 10^k) inside [lo, hi],
// about five of them.
func ticks(lo, hi float64) []float64 {
	span := hi - lo
	if !(span > 0) {
		return nil
	}
	step := math.Pow(10, math.Floor(math.Log10(span/5)))
	for _, m := range []float64{1, 2, 5, 10} {
		if span/(step*m) <= 6 {
			step *= m
			break
		}
	}
	var out []float64
	for t := math.Ceil(lo/step) * step; t <= hi; t += step {
		out = append(out, t)
	}
	return out
}

func tickLabel(t float64) string {
	if math.Abs(t) < 1e-12 {
		return "0"
	}
	return strings.TrimSuffix(strings.TrimRight(fmt.Sprintf("%.3f", t), "0"), ".")
}

// shortNames shortens a comma-separated list of paths to base names.
func shortNames(s string) string {
	parts := strings.Split(s, ",")
	for i, p := range parts {
		parts[i] = filepath.Base(p)
	}
	return clip(strings.Join(parts, ", "), 60)
}

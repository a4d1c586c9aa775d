//! Dense LU factorisation with partial pivoting, in place in preallocated storage.
//!
//! The `bdf` stepper refactors its Newton matrix every few steps and keeps the factors
//! between steps (they are part of its saved workspace), so the factorisation must neither
//! allocate nor hide its storage: nalgebra's `LU::new` consumes and allocates a matrix.
//! Row-major storage, L unit lower triangular below the diagonal, U on and above it.

/// The factors of an `n × n` matrix and the row exchanges that produced them.
#[derive(Debug, Clone)]
pub struct DenseLu {
    n: usize,
    /// The matrix to factor, then its factors (row-major).
    pub a: Vec<f64>,
    /// At elimination step k, row k was exchanged with row `piv[k]` (≥ k).
    pub piv: Vec<usize>,
}

impl DenseLu {
    pub fn new(n: usize) -> Self {
        DenseLu {
            n,
            a: vec![0.0; n * n],
            piv: (0..n).collect(),
        }
    }

    /// Factorises the matrix stored in `a`. A pivot whose magnitude is at most `tiny` (or
    /// NaN) makes the matrix singular: `Err((column, pivot))`, with `a` left half-factored.
    pub fn factor(&mut self, tiny: f64) -> Result<(), (usize, f64)> {
        self.factor_banded(tiny, self.n, self.n)
    }

    /// [`DenseLu::factor`] for a matrix that is 0 below its `ml`-th subdiagonal and above
    /// its `mu`-th superdiagonal: the pivot is searched in the ml rows below the diagonal and
    /// the elimination touches the ml + mu columns right of it (partial pivoting widens U to
    /// ml + mu), O(n·ml·(ml + mu) + n²) instead of O(n³). Rows are still exchanged whole, so
    /// the factors, their layout and [`DenseLu::solve`] are the dense factorisation's bit for
    /// bit, signed zeros included (outside the band it only ever subtracts exact zeros).
    /// With ml, mu ≥ n − 1 it is the dense factorisation.
    pub fn factor_banded(&mut self, tiny: f64, ml: usize, mu: usize) -> Result<(), (usize, f64)> {
        let n = self.n;
        for k in 0..n {
            let rows = k.saturating_add(ml).saturating_add(1).min(n);
            let cols = k
                .saturating_add(ml)
                .saturating_add(mu)
                .saturating_add(1)
                .min(n);
            // The first of equal candidates, as LAPACK-style codes choose.
            let mut p = k;
            for i in k + 1..rows {
                if self.a[i * n + k].abs() > self.a[p * n + k].abs() {
                    p = i;
                }
            }
            self.piv[k] = p;
            if p != k {
                for j in 0..n {
                    self.a.swap(k * n + j, p * n + j);
                }
            }
            let pivot = self.a[k * n + k];
            if pivot.is_nan() || pivot.abs() <= tiny {
                return Err((k, pivot));
            }
            // Multipliers by the reciprocal (one division per column, as SUNDIALS' dense LU
            // does, so the two factor bit-identically).
            let inv = 1.0 / pivot;
            let (upper, lower) = self.a.split_at_mut((k + 1) * n);
            let row_k = &upper[k * n..];
            for (i, row) in lower.chunks_exact_mut(n).enumerate() {
                // Below the band the multiplier is ±0 (the sign the dense elimination gives
                // it, O(n²) in all) and eliminates nothing.
                let m = row[k] * inv;
                row[k] = m;
                if m != 0.0 && k + 1 + i < rows {
                    for j in k + 1..cols {
                        row[j] -= m * row_k[j];
                    }
                }
            }
        }
        Ok(())
    }

    /// Solves `A x = b` in place with the factors of the last successful `factor`.
    pub fn solve(&self, b: &mut [f64]) {
        let n = self.n;
        for k in 0..n {
            b.swap(k, self.piv[k]);
        }
        // Each b_i takes its updates one at a time in elimination order (forward: k = 0, 1,
        // ...; backward: k = n-1, n-2, ...), the rounding of a column-oriented solve.
        for i in 1..n {
            let (solved, rest) = b.split_at_mut(i);
            let row = &self.a[i * n..i * n + i];
            for (l, x) in row.iter().zip(solved.iter()) {
                rest[0] -= l * x;
            }
        }
        for i in (0..n).rev() {
            let (head, solved) = b.split_at_mut(i + 1);
            let row = &self.a[i * n..(i + 1) * n];
            for (u, x) in row[i + 1..].iter().zip(solved.iter()).rev() {
                head[i] -= u * x;
            }
            head[i] /= row[i];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::DenseLu;

    #[test]
    fn solves_a_system_that_needs_pivoting() {
        // The zero in the top-left corner forces a row exchange.
        let m = [0.0, 2.0, 1.0, 1.0, 1.0, 1.0, 4.0, -1.0, 3.0];
        let x = [1.0, -2.0, 0.5];
        let mut b: Vec<f64> = (0..3)
            .map(|i| (0..3).map(|j| m[i * 3 + j] * x[j]).sum())
            .collect();
        let mut lu = DenseLu::new(3);
        lu.a.copy_from_slice(&m);
        lu.factor(1e-14).unwrap();
        lu.solve(&mut b);
        for (got, want) in b.iter().zip(x) {
            assert!((got - want).abs() < 1e-14, "{got} vs {want}");
        }
    }

    #[test]
    fn reports_a_singular_matrix() {
        let mut lu = DenseLu::new(2);
        lu.a.copy_from_slice(&[1.0, 2.0, 2.0, 4.0]);
        let (col, _) = lu.factor(1e-12).unwrap_err();
        assert_eq!(col, 1);
    }

    #[test]
    fn the_banded_factorisation_is_the_dense_one_bit_for_bit() {
        // A pentadiagonal-ish matrix (ml = 2, mu = 1) with small diagonals: rows exchange.
        let (n, ml, mu) = (9, 2, 1);
        let mut m = vec![0.0; n * n];
        let mut x = 0.37f64;
        for i in 0..n {
            for j in i.saturating_sub(ml)..(i + mu + 1).min(n) {
                x = (x * 7.31 + 0.113).fract();
                m[i * n + j] = if i == j { 0.01 * x } else { x - 0.5 };
            }
        }
        let mut dense = DenseLu::new(n);
        dense.a.copy_from_slice(&m);
        dense.factor(1e-14).unwrap();
        let mut banded = DenseLu::new(n);
        banded.a.copy_from_slice(&m);
        banded.factor_banded(1e-14, ml, mu).unwrap();
        assert!(dense.piv.iter().enumerate().any(|(k, p)| *p != k));
        assert_eq!(dense.piv, banded.piv);
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&dense.a), bits(&banded.a));
        // A narrower band than the matrix has is a different (wrong) factorisation.
        let mut narrow = DenseLu::new(n);
        narrow.a.copy_from_slice(&m);
        narrow.factor_banded(1e-14, 1, 1).unwrap();
        assert_ne!(bits(&dense.a), bits(&narrow.a));
    }
}

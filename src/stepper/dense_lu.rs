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
        let n = self.n;
        for k in 0..n {
            // The first of equal candidates, as LAPACK-style codes choose.
            let mut p = k;
            for i in k + 1..n {
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
            for row in lower.chunks_exact_mut(n) {
                let m = row[k] * inv;
                row[k] = m;
                if m != 0.0 {
                    for j in k + 1..n {
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
}

//! Value models: what a simulated sensor reads, as a pure function of (seed, device, sample).
//!
//! Randomness comes from [`SplitMix64`], a tiny generator written here so that the values for
//! a given seed never change with a dependency upgrade. Every value is derived from its own
//! stream (seed, device, sample), so generating sample 1000 does not require generating
//! samples 0 to 999, and two devices never share noise. (The daily cycles use `f64::sin` and
//! `cos`, whose last bit may differ between platforms' math libraries; rounding to 2
//! decimals hides that in all but the rarest cases.)

use std::f64::consts::TAU;

/// Nanoseconds in a day, for the daily temperature and humidity cycles.
const DAY_NS: i64 = 86_400_000_000_000;
/// Period of the slow pressure oscillation (three days, like passing weather systems).
const PRESSURE_PERIOD_NS: i64 = 3 * DAY_NS;

/// Salts that separate the streams derived from one seed.
const DEVICE_STREAM: u64 = 0x6465_7669_6365_0001;
const SAMPLE_STREAM: u64 = 0x7361_6d70_6c65_0002;

/// The SplitMix64 generator (Steele, Lea, Flood 2014): 64 bits of state, good statistical
/// quality for simulation, and trivially reproducible.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// Creates a generator from a seed.
    pub const fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// Creates the generator of one stream, identified by a seed and any number of parts
    /// (device index, sample index, a salt...). Different part lists give independent streams.
    pub fn derive(seed: u64, parts: &[u64]) -> Self {
        let state = parts.iter().fold(mix64(seed), |acc, part| {
            mix64(acc ^ mix64(part.wrapping_add(GOLDEN)))
        });
        Self::new(state)
    }

    /// Returns the next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN);
        mix64(self.state)
    }

    /// Returns a uniformly distributed float in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        // The top 53 bits fill the mantissa exactly.
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Returns a uniformly distributed float in `[low, high)`.
    pub fn range(&mut self, low: f64, high: f64) -> f64 {
        low + (high - low) * self.next_f64()
    }

    /// Returns an integer in `[0, bound)` (`bound` must not be 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        // The modulo bias is below 2^-40 for the small bounds used here.
        self.next_u64() % bound
    }

    /// Returns bell-shaped noise with mean 0 and the given standard deviation (the sum of
    /// three uniforms: bounded, cheap, and free of transcendental functions).
    pub fn noise(&mut self, std_dev: f64) -> f64 {
        let sum = self.next_f64() + self.next_f64() + self.next_f64();
        // Var(U) = 1/12, so the sum of three has variance 1/4: scale by 2 for unit variance.
        (sum - 1.5) * 2.0 * std_dev
    }
}

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// The SplitMix64 output function: a strong 64-bit mixer.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Rounds to 2 decimals, so that values print short and parse back to the same `f64`.
pub fn round2(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

/// One reading of every sensor of a device.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Air temperature in °C (2 decimals).
    pub temperature: f64,
    /// Relative humidity in % (2 decimals, within 0..=100).
    pub humidity: f64,
    /// Barometric pressure in hPa (2 decimals).
    pub pressure: f64,
    /// A counter that increases strictly from one sample to the next (pulses, packets...).
    pub count: i64,
}

/// The personality of one device: its climate and counter, fixed by (seed, device index).
#[derive(Debug, Clone)]
pub struct DeviceModel {
    seed: u64,
    device: u64,
    temperature_base: f64,
    temperature_amplitude: f64,
    /// Fraction of the day at which the temperature peaks.
    peak: f64,
    humidity_base: f64,
    humidity_amplitude: f64,
    pressure_base: f64,
    pressure_phase: f64,
    count_base: i64,
    count_step: i64,
}

impl DeviceModel {
    /// Creates the model of device `device` of the fleet seeded with `seed`.
    pub fn new(seed: u64, device: usize) -> Self {
        let device = device as u64;
        let mut rng = SplitMix64::derive(seed, &[DEVICE_STREAM, device]);
        Self {
            seed,
            device,
            temperature_base: rng.range(18.0, 26.0),
            temperature_amplitude: rng.range(2.0, 6.0),
            peak: rng.range(13.0, 17.0) / 24.0,
            humidity_base: rng.range(35.0, 60.0),
            humidity_amplitude: rng.range(5.0, 15.0),
            pressure_base: rng.range(1000.0, 1025.0),
            pressure_phase: rng.next_f64(),
            count_base: rng.below(1_000_000) as i64,
            count_step: 1 + rng.below(10) as i64,
        }
    }

    /// The readings of sample number `sample`, taken at `timestamp_ns` (ns since the epoch).
    ///
    /// Temperature follows a daily cycle that peaks in the afternoon, humidity the opposite
    /// cycle, pressure a slow three-day swing; each with a little noise. The count grows by
    /// `step` per sample plus a jitter below `step`, so it always increases strictly.
    pub fn sample(&self, sample: u64, timestamp_ns: i64) -> Sample {
        let mut rng = SplitMix64::derive(self.seed, &[SAMPLE_STREAM, self.device, sample]);
        let day = timestamp_ns.rem_euclid(DAY_NS) as f64 / DAY_NS as f64;
        let daily = (TAU * (day - self.peak)).cos();
        let swing = timestamp_ns.rem_euclid(PRESSURE_PERIOD_NS) as f64 / PRESSURE_PERIOD_NS as f64;

        let temperature = self.temperature_base + self.temperature_amplitude * daily;
        let humidity = self.humidity_base - self.humidity_amplitude * daily;
        let pressure = self.pressure_base + 4.0 * (TAU * (swing + self.pressure_phase)).sin();
        let jitter = rng.below(self.count_step as u64) as i64;
        Sample {
            temperature: round2(temperature + rng.noise(0.15)),
            humidity: round2((humidity + rng.noise(0.8)).clamp(0.0, 100.0)),
            pressure: round2(pressure + rng.noise(0.2)),
            count: self
                .count_base
                .saturating_add((sample as i64).saturating_mul(self.count_step))
                .saturating_add(jitter),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_matches_reference_sequence() {
        // First outputs for seed 1234567 from the reference implementation (Vigna's splitmix64.c).
        let mut rng = SplitMix64::new(1234567);
        assert_eq!(rng.next_u64(), 6457827717110365317);
        assert_eq!(rng.next_u64(), 3203168211198807973);
        assert_eq!(rng.next_u64(), 9817491932198370423);
    }

    #[test]
    fn uniform_floats_stay_in_range() {
        let mut rng = SplitMix64::new(7);
        for _ in 0..10_000 {
            let x = rng.next_f64();
            assert!((0.0..1.0).contains(&x));
            let n = rng.noise(1.0);
            assert!((-3.0..=3.0).contains(&n));
        }
    }

    #[test]
    fn samples_are_deterministic_rounded_and_plausible() {
        let model = DeviceModel::new(42, 3);
        let again = DeviceModel::new(42, 3);
        let mut last_count = None;
        for k in 0..2_000u64 {
            let ts = 1_700_000_000_000_000_000 + k as i64 * 60_000_000_000;
            let s = model.sample(k, ts);
            assert_eq!(s, again.sample(k, ts));
            for v in [s.temperature, s.humidity, s.pressure] {
                assert_eq!(v, round2(v));
                assert_eq!(v.to_string().parse::<f64>().ok(), Some(v));
            }
            assert!((10.0..35.0).contains(&s.temperature), "{s:?}");
            assert!((0.0..=100.0).contains(&s.humidity), "{s:?}");
            assert!((990.0..1035.0).contains(&s.pressure), "{s:?}");
            if let Some(last) = last_count {
                assert!(
                    s.count > last,
                    "count must increase: {last} then {}",
                    s.count
                );
            }
            last_count = Some(s.count);
        }
    }

    #[test]
    fn devices_and_seeds_differ() {
        let ts = 1_700_000_000_000_000_000;
        let a = DeviceModel::new(42, 0).sample(0, ts);
        let b = DeviceModel::new(42, 1).sample(0, ts);
        let c = DeviceModel::new(43, 0).sample(0, ts);
        assert_ne!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn temperature_follows_a_daily_cycle() {
        let model = DeviceModel::new(1, 0);
        let hour = 3_600_000_000_000i64;
        let midnight = 1_700_006_400_000_000_000i64; // 2023-11-15T00:00:00Z
        let night = model.sample(0, midnight + 4 * hour).temperature;
        let afternoon = model.sample(1, midnight + 15 * hour).temperature;
        assert!(
            afternoon > night + 2.0,
            "afternoon {afternoon} vs night {night}"
        );
    }
}

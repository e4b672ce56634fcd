"""A small, real ML pipeline as portable isthmus steps.

ingest (the diabetes dataset shipped with scikit-learn) -> featurize -> train -> evaluate. The same
functions run locally, as Airflow tasks and as Flyte tasks, unchanged.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.datasets import load_diabetes
from sklearn.ensemble import RandomForestRegressor
from sklearn.metrics import mean_absolute_error, r2_score
from sklearn.model_selection import train_test_split

from isthmus import CachePolicy, Resources, pipeline, step

TARGET = "target"
TEST_FRACTION = 0.25


def _interaction_terms(df: pd.DataFrame) -> pd.DataFrame:
    """Pairwise products of the strongest predictors."""
    out = df.copy()
    out["bmi_x_bp"] = df["bmi"] * df["bp"]
    out["bmi_x_s5"] = df["bmi"] * df["s5"]
    return out


@step
def ingest() -> pd.DataFrame:
    """Load the raw dataset (442 patients, 10 features, disease progression target)."""
    data = load_diabetes(as_frame=True)
    df = data.frame.rename(columns={"target": TARGET})
    return df


@step(cache=CachePolicy(expires_after="30d"))
def featurize(raw: pd.DataFrame) -> pd.DataFrame:
    """Standardize features and add interaction terms."""
    features = raw.drop(columns=[TARGET])
    scaled = (features - features.mean()) / features.std(ddof=0)
    out = _interaction_terms(scaled)
    out[TARGET] = raw[TARGET].to_numpy()
    return out


@step(resources=Resources(cpu=2, memory="2Gi"), retries=1, cache=CachePolicy(expires_after="7d"))
def train(features: pd.DataFrame, n_estimators: int = 100, seed: int = 0) -> RandomForestRegressor:
    """Fit a random forest on the training split."""
    x_train, _, y_train, _ = _split(features, seed)
    model = RandomForestRegressor(n_estimators=n_estimators, random_state=seed, n_jobs=1)
    model.fit(x_train, y_train)
    return model


@step
def evaluate(model: RandomForestRegressor, features: pd.DataFrame, seed: int = 0) -> dict:
    """Score the model on the held-out split."""
    _, x_test, _, y_test = _split(features, seed)
    pred = model.predict(x_test)
    return {
        "r2": round(float(r2_score(y_test, pred)), 4),
        "mae": round(float(mean_absolute_error(y_test, pred)), 3),
        "n_test": int(len(y_test)),
        "top_feature": str(x_test.columns[int(np.argmax(model.feature_importances_))]),
    }


def _split(features: pd.DataFrame, seed: int) -> tuple:
    x = features.drop(columns=[TARGET])
    y = features[TARGET]
    return train_test_split(x, y, test_size=TEST_FRACTION, random_state=seed)


@pipeline
def ml_pipeline(n_estimators: int = 100, seed: int = 0):
    raw = ingest()
    feats = featurize(raw)
    model = train(feats, n_estimators=n_estimators, seed=seed)
    return evaluate(model, feats, seed=seed)

"""Write homes.csv, the README's small real-looking table: an id, a city, an energy class (some
blank), the floor area, the year built (some blank), rooms and the price. Seeded, so the file
is reproducible: python examples/data/make_homes.py"""

import random
from pathlib import Path

rng = random.Random(7)
CITY = {"Lyon": 4800, "Marseille": 3600, "Paris": 10500, "Toulouse": 3900}  # price per m²
ENERGY = {"A": 1.08, "B": 1.05, "C": 1.0, "D": 0.97, "E": 0.93}
lines = ["id,city,energy,sqm,year_built,rooms,price"]
for i in range(400):
    city = rng.choice(list(CITY))
    energy = rng.choice(list(ENERGY))
    sqm = rng.randint(18, 160)
    year = rng.randint(1880, 2023)
    rooms = max(1, round(sqm / 22 + rng.gauss(0, 0.6)))
    price = CITY[city] * sqm * ENERGY[energy] + 150 * (year - 1950) + 4000 * rooms \
        + rng.gauss(0, 15000)
    lines.append(f"h{i:04d},{city},{'' if rng.random() < 0.08 else energy},{sqm},"
                 f"{'' if rng.random() < 0.12 else year},{rooms},{price:.0f}")
Path(__file__).with_name("homes.csv").write_text("\n".join(lines) + "\n")

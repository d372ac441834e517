"""Write cars.csv, the README's walk-through of a data set linreg has never seen: 392 cars as R's
write.csv writes them (NA for a missing value), in the spirit of ISLR's Auto: miles per gallon,
cylinders, engine displacement, horsepower (a few NA), weight, acceleration, model year, the
origin (a code: 1 American, 2 European, 3 Japanese) and the car's name (an id, nearly one per
row). Seeded, so the file is reproducible: python examples/data/make_cars.py"""

import random
from pathlib import Path

rng = random.Random(1983)
MAKES = {1: ["chevrolet", "ford", "plymouth", "dodge", "amc", "buick", "pontiac"],
         2: ["volkswagen", "peugeot", "fiat", "audi", "volvo", "saab", "renault"],
         3: ["toyota", "datsun", "honda", "mazda", "subaru"]}
MODELS = ["malibu", "torino", "pinto", "corolla", "civic", "rabbit", "504", "124", "rx-4",
          "dl", "custom", "wagon", "coupe", "sedan", "sport", "deluxe", "gl", "brougham"]
lines = ["mpg,cylinders,displacement,horsepower,weight,acceleration,year,origin,name"]
for i in range(392):
    origin = rng.choices([1, 2, 3], weights=[245, 68, 79])[0]
    cylinders = rng.choice([4, 4, 4, 6, 8] if origin == 1 else [4, 4, 4, 4, 6])
    displacement = round(cylinders * rng.uniform(22, 48))
    horsepower = round(20 + 0.45 * displacement + rng.gauss(0, 12))
    weight = round(1400 + 8.5 * displacement + rng.gauss(0, 250))
    acceleration = round(24 - 0.045 * horsepower + rng.gauss(0, 1.5), 1)
    year = rng.randint(70, 82)
    mpg = (46 - 0.0055 * weight - 0.03 * horsepower + 0.75 * (year - 76)
           + {1: 0.0, 2: 1.4, 3: 2.3}[origin] + rng.gauss(0, 2.8))
    name = f"{rng.choice(MAKES[origin])} {rng.choice(MODELS)}"
    if rng.random() < 0.8:  # most names are one of a kind, as in Auto
        name += f" {chr(97 + i % 26)}{i}"
    hp = "NA" if rng.random() < 0.015 else str(horsepower)
    lines.append(f"{max(mpg, 9):.1f},{cylinders},{displacement},{hp},{weight},{acceleration},"
                 f"{year},{origin},\"{name}\"")
Path(__file__).with_name("cars.csv").write_text("\n".join(lines) + "\n")
